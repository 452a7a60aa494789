package specjson

import (
	"encoding/json"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestMarshalKeepsEmptySeccompFlags(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty list stays", `{"linux":{"seccomp":{"defaultAction":"SCMP_ACT_ALLOW","flags":[]}}}`, `"flags":[]`},
		{"flags stay", `{"linux":{"seccomp":{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG"]}}}`, `"flags":["SECCOMP_FILTER_FLAG_LOG"]`},
		{"missing stays missing", `{"linux":{"seccomp":{"defaultAction":"SCMP_ACT_ALLOW"}}}`, ``},
		{"no seccomp", `{"linux":{}}`, ``},
		{"no linux", `{"ociVersion":"1.2.0"}`, ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s specs.Spec
			if err := json.Unmarshal([]byte(tc.in), &s); err != nil {
				t.Fatal(err)
			}
			b, err := Marshal(&s)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" && strings.Contains(string(b), `"flags"`) || tc.want != "" && !strings.Contains(string(b), tc.want) {
				t.Errorf("Marshal: %s; want it to have %q", b, tc.want)
			}
			var back specs.Spec
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("output does not decode: %v", err)
			}
		})
	}
}
