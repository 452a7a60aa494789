// Package specjson encodes an OCI runtime spec without losing what the
// runtime-spec Go types' omitempty drops but runc reads. It imports only
// the runtime-spec types, so the host and the guest agent both use it.
package specjson

import (
	"encoding/json"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Marshal is json.Marshal of s, except that an empty, non-nil
// linux.seccomp.flags stays in the output: for runc an empty list means
// "no flags" and a missing one "the default flags"
// (SECCOMP_FILTER_FLAG_SPEC_ALLOW), and omitempty would turn the first into
// the second.
func Marshal(s *specs.Spec) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil || s.Linux == nil || s.Linux.Seccomp == nil || s.Linux.Seccomp.Flags == nil || len(s.Linux.Seccomp.Flags) > 0 {
		return b, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	var linux map[string]json.RawMessage
	if err := json.Unmarshal(doc["linux"], &linux); err != nil {
		return nil, err
	}
	var seccomp map[string]json.RawMessage
	if err := json.Unmarshal(linux["seccomp"], &seccomp); err != nil {
		return nil, err
	}
	seccomp["flags"] = json.RawMessage("[]")
	if linux["seccomp"], err = json.Marshal(seccomp); err != nil {
		return nil, err
	}
	if doc["linux"], err = json.Marshal(linux); err != nil {
		return nil, err
	}
	return json.Marshal(doc)
}
