package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestLoadSpecErrors(t *testing.T) {
	tests := []struct {
		name   string
		config string // "" for no config.json
		rootfs bool
		want   []string
		is     error
	}{
		{name: "no config", rootfs: true, want: []string{"config.json does not exist"}, is: errdefs.ErrNotFound},
		{name: "syntax error", config: "{\n \"process\": [}", rootfs: true, want: []string{"config.json", "line 2, column"}, is: errdefs.ErrInvalidArgument},
		{name: "type error", config: `{"root": {"path": 7}}`, rootfs: true, want: []string{"config.json", "line 1", "root.path"}, is: errdefs.ErrInvalidArgument},
		{name: "no root", config: `{"process": {"args": ["true"], "cwd": "/"}}`, rootfs: true, want: []string{"root.path is not set"}, is: errdefs.ErrInvalidArgument},
		{name: "missing rootfs", config: `{"root": {"path": "rootfs"}, "process": {"args": ["true"], "cwd": "/"}}`, want: []string{"root.path", "no such file"}},
		{name: "relative cwd", config: `{"root": {"path": "rootfs"}, "process": {"args": ["true"], "cwd": "tmp"}}`, rootfs: true, want: []string{"process.cwd \"tmp\""}, is: errdefs.ErrInvalidArgument},
		{name: "ok", config: `{"root": {"path": "rootfs"}, "process": {"args": ["true"], "cwd": "/"}}`, rootfs: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.rootfs {
				os.Mkdir(filepath.Join(dir, "rootfs"), 0o755)
			}
			if tc.config != "" {
				os.WriteFile(filepath.Join(dir, "config.json"), []byte(tc.config), 0o644)
			}
			_, err := LoadSpec(dir)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
		})
	}
	if _, err := LoadSpec("/nonexistent"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing bundle: %v", err)
	}
}

func TestValidateID(t *testing.T) {
	for id, ok := range map[string]bool{"abc": true, "a.b_c-1+2": true, "": false, "a/b": false, "..": false, "-x": false, strings.Repeat("a", 129): false} {
		if err := ValidateID(id); (err == nil) != ok {
			t.Errorf("ValidateID(%q) = %v", id, err)
		}
	}
}
