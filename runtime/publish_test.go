package runtime

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParsePublish(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []portMapping
		bad  bool
	}{
		{in: "", want: nil},
		{in: "8080:80", want: []portMapping{{"0.0.0.0", 8080, 80}}},
		{in: "127.0.0.1:8080:80/tcp, 9000:9000", want: []portMapping{{"127.0.0.1", 8080, 80}, {"0.0.0.0", 9000, 9000}}},
		{in: "::1:8080:80", bad: true},
		{in: "80/udp", bad: true},
		{in: "80", bad: true},
		{in: "0:80", bad: true},
		{in: "8080:70000", bad: true},
		{in: "localhost:8080:80", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parsePublish(tc.in)
			if tc.bad {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("parsePublish(%q) = %v, %v; want an invalid-argument error", tc.in, got, err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("parsePublish(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("mapping %d: %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}
