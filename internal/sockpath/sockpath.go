// Package sockpath makes unix socket paths short enough to bind and dial.
// A sun_path holds 108 bytes, and state directories named by containerd's
// 64-character ids under a namespace directory get past that.
package sockpath

import "net"

// Listen listens on the unix socket at path, however long.
func Listen(path string) (net.Listener, error) {
	short, done, err := Short(path)
	if err != nil {
		return nil, err
	}
	defer done()
	return net.Listen("unix", short)
}

// Dial connects to the unix socket at path, however long.
func Dial(path string) (net.Conn, error) {
	short, done, err := Short(path)
	if err != nil {
		return nil, err
	}
	defer done()
	return net.Dial("unix", short)
}
