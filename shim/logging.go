package shim

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"

	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// startLogger runs a logging binary (stdio URI binary:// or binary-v2://,
// as nerdctl uses for its log driver) the way containerd's shims do: the
// binary gets the container's stdout and stderr as fds 3 and 4 and says it
// is ready by closing (binary-v2: writing a byte to) fd 5.
func startLogger(ctx context.Context, uri *url.URL, id string) (stdout, stderr io.WriteCloser, err error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	var args []string
	for k, vs := range uri.Query() {
		args = append(args, k)
		if len(vs) > 0 {
			args = append(args, vs[0])
		}
	}
	cmd := exec.Command(uri.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+id, "CONTAINER_NAMESPACE="+ns)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	err = cmd.Start()
	outR.Close()
	errR.Close()
	readyW.Close()
	defer readyR.Close()
	if err != nil {
		outW.Close()
		errW.Close()
		return nil, nil, fmt.Errorf("starting logging binary %s: %w", uri.Path, err)
	}
	go func() { _ = cmd.Wait() }()
	b := make([]byte, 1)
	n, rerr := readyR.Read(b)
	if (rerr != nil && rerr != io.EOF) || (uri.Scheme == "binary-v2" && n == 0) {
		_ = cmd.Process.Kill()
		outW.Close()
		errW.Close()
		return nil, nil, fmt.Errorf("logging binary %s did not get ready", uri.Path)
	}
	return outW, errW, nil
}
