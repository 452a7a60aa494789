package runtime

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCollectTemplates(t *testing.T) {
	root := t.TempDir()
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(kernel, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	inputs, err := templateInputs(kernel)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name, inputs string) string {
		d := filepath.Join(root, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if inputs != "" {
			if err := os.WriteFile(filepath.Join(d, "inputs"), []byte(inputs), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	current := mk("current", inputs)
	gone := mk("gone", "/nonexistent/vmlinux 1 2 3\n")
	old := mk("old", "")
	changed := mk("changed", inputs)
	tmp := mk("x.tmp-1", "")
	past := time.Now().Add(-2 * time.Hour)
	_ = os.Chtimes(tmp, past, past)
	fresh := mk("y.tmp-2", "")
	// The same path, rewritten: another template's kernel.
	if err := os.WriteFile(filepath.Join(changed, "inputs"), []byte(kernel+" 1 2 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	collectTemplates(context.Background(), root)
	for _, d := range []string{current, fresh} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", filepath.Base(d), err)
		}
	}
	for _, d := range []string{gone, old, changed, tmp} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s kept", filepath.Base(d))
		}
	}
}
