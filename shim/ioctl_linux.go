package shim

import "golang.org/x/sys/unix"

// bytesQueued is the ioctl that reads how many bytes wait in a pipe.
const bytesQueued = unix.TIOCINQ
