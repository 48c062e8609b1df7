// Command sleeper is the whole of the image the real-runtime tests run: a
// static binary that waits for SIGTERM or SIGINT, which as a container's
// first process it would otherwise ignore.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
