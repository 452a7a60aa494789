// Package runtime is vzrun's host side: the state directory of each
// container (a flock-protected JSON file), turning an OCI bundle into a VM
// configuration, booting the VM through package hypervisor, and talking to
// the guest agent. Both cmd/vzrun and the containerd shim use it.
//
// It must not import shim or agent (the agent runs in the guest; only its
// API in api/agent/v1 is shared).
package runtime
