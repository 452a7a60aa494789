package shim

// bytesQueued is the ioctl that reads how many bytes wait in a pipe:
// FIONREAD of <sys/filio.h> (golang.org/x/sys/unix does not name it).
const bytesQueued = 0x4004667f
