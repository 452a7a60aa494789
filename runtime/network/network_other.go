//go:build !linux

package network

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/containerd/errdefs"
)

// Tap is a Linux tap device.
type Tap struct{ File *os.File }

func NewTap(name string) (*Tap, error) {
	return nil, fmt.Errorf("tap devices: %w", errdefs.ErrNotImplemented)
}

func (t *Tap) CloseFile() {}
func (t *Tap) Close()     {}

func Inspect(nsPath string, skip ...string) ([]Interface, []Route, error) {
	return nil, nil, fmt.Errorf("network namespaces: %w", errdefs.ErrNotImplemented)
}

func Connect(nsPath string, tap *Tap, ifc Interface) error {
	return fmt.Errorf("network namespaces: %w", errdefs.ErrNotImplemented)
}

func Disconnect(nsPath, ifName string) error { return nil }

func SameAsInit(nsPath string) bool { return false }

func StartIn(ns *os.File, cmd *exec.Cmd) error { return cmd.Start() }

func Do(ns *os.File, fn func() error) error { return fn() }
