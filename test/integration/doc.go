// Package integration drives the vzrun binary the way users and callers
// (containerd's runc shim, BuildKit) do, booting real VMs. The tests skip
// where no guest is built, except under CI=true, where that fails them.
package integration
