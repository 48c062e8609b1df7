// Command tmt-holder is the whole of the image the container test runs: it
// opens loopback TCP connections to itself and never reads them, shrinks
// the receivers' SO_RCVBUF while their windows are still open and writes
// into them, so that the kernel drops segments for the socket's own
// buffer (TCPRcvQDrop), then prints "ready" and holds the filled queues.
// On SIGUSR1 it closes them all, which ends the drops (the writers'
// retransmissions), and prints "released"; it exits on SIGTERM or SIGINT
// (as a container's first process it would otherwise ignore them).
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const conns = 4

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tmt-holder:", err)
		os.Exit(1)
	}
}

func run() error {
	stop, release := make(chan os.Signal, 1), make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	signal.Notify(release, syscall.SIGUSR1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var writers, readers []*net.TCPConn
	for range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		a, err := ln.Accept()
		if err != nil {
			return err
		}
		writers, readers = append(writers, c.(*net.TCPConn)), append(readers, a.(*net.TCPConn))
	}
	chunk := make([]byte, 64<<10)
	for _, w := range writers { // well inside the windows the readers advertise
		if _, err := w.Write(chunk[:8<<10]); err != nil {
			return err
		}
	}
	for _, r := range readers { // the kernel raises 1 to its minimum
		if err := r.SetReadBuffer(1); err != nil {
			return err
		}
	}
	// Into the windows advertised before the shrink: dropped, retried,
	// dropped again, until the writers' queues are full.
	end := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		for _, w := range writers {
			w.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
			if _, err := w.Write(chunk); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return err
			}
		}
	}
	fmt.Println("ready")
	select {
	case <-stop:
		return nil
	case <-release:
	}
	for i := range readers { // unread data: resets, not drops
		readers[i].Close()
		writers[i].Close()
	}
	fmt.Println("released")
	<-stop
	return nil
}
