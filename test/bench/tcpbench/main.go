// Command tcpbench measures TCP throughput for make bench: `tcpbench -s
// :PORT` serves, `tcpbench -c HOST:PORT -dir up|down -t 5s` sends to or
// receives from the server for a while and prints MB/s. A static binary,
// so it runs in a busybox container as well as on the host.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"time"
)

func main() {
	serve := flag.String("s", "", "serve on this address")
	connect := flag.String("c", "", "connect to this address")
	dir := flag.String("dir", "up", "up: client sends; down: server sends")
	d := flag.Duration("t", 5*time.Second, "how long to send")
	flag.Parse()
	switch {
	case *serve != "":
		l, err := net.Listen("tcp", *serve)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("listening")
		for {
			c, err := l.Accept()
			if err != nil {
				log.Fatal(err)
			}
			go handle(c)
		}
	case *connect != "":
		mbps, err := client(*connect, *dir, *d)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcpbench:", err)
			os.Exit(1)
		}
		fmt.Printf("%.1f\n", mbps)
	default:
		flag.Usage()
		os.Exit(2)
	}
}

// handle serves one client: the first byte says which way data flows.
func handle(c net.Conn) {
	defer c.Close()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	if mode[0] == 'd' {
		buf := make([]byte, 128<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
	_, _ = io.Copy(io.Discard, c)
}

func client(addr, dir string, d time.Duration) (float64, error) {
	var c net.Conn
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err = net.DialTimeout("tcp", addr, 5*time.Second); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return 0, err
	}
	defer c.Close()
	mode := []byte{'u'}
	if dir == "down" {
		mode[0] = 'd'
	}
	if _, err := c.Write(mode); err != nil {
		return 0, err
	}
	buf := make([]byte, 128<<10)
	var n int64
	start := time.Now()
	_ = c.SetDeadline(start.Add(d))
	for {
		var k int
		if dir == "down" {
			k, err = c.Read(buf)
		} else {
			k, err = c.Write(buf)
		}
		n += int64(k)
		if err != nil {
			break
		}
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}
