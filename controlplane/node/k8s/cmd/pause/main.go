// Command pause is the process of every pod sandbox: it holds the pod's namespaces, sleeps until SIGINT or
// SIGTERM, and reaps orphaned children (it is PID 1 when the pod shares its process namespace). It does what
// Kubernetes' build/pause/linux/pause.c does, in Go so that it builds statically without a C toolchain.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
