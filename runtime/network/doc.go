// Package network joins a VM to the network namespace its container was
// given on the host (by CNI through nerdctl, by containerd's CRI, or by
// hand): a tap device in that namespace, redirected both ways to the
// namespace's interface with tc mirred (Kata's default scheme), so the VM
// takes the place of the container's network stack. The guest is then told
// the interface's MAC, MTU, addresses and routes.
//
// It must not import runtime, shim or agent.
package network
