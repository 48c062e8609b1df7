package metrics

import (
	"container/list"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Listen opens addr ([HOST]:PORT; no host: 127.0.0.1 only). It is separate
// from Serve so that a bad address is found before anything is traced.
func Listen(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.Listen("tcp", net.JoinHostPort(host, port))
}

// MaxConns bounds the connections the endpoint holds: past it, a new one
// closes the longest-idle kept-alive connection, or is refused if none is
// idle. A scrape is one short request; thousands of clients holding
// connections open must not cost the node memory, nor lock Prometheus out.
const MaxConns = 64

// Serve exposes the collector (and the process's own metrics) on ln's
// /metrics, and /healthz, which answers 200 while the trace's counts are
// fresh (a snapshot within the last 10 s) and 503 otherwise. Every
// connection is bounded in time: a client that sends nothing, reads
// nothing or stays idle is closed.
func Serve(ln net.Listener, c *Collector) *http.Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 8}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if age := c.sinceSnapshot(); age > 10*time.Second {
			http.Error(w, fmt.Sprintf("no counts for %v", age.Round(time.Second)), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	lim := &connLimit{Listener: ln, max: MaxConns, state: map[net.Conn]*list.Element{}, idle: list.New()}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ConnState:         lim.track,
	}
	go srv.Serve(lim)
	return srv
}

// connLimit is a listener that keeps at most max connections open.
type connLimit struct {
	net.Listener
	max int

	mu    sync.Mutex
	state map[net.Conn]*list.Element // open connections; the element when idle
	idle  *list.List                 // idle connections, longest idle first
}

func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.admit(c) {
			return c, nil
		}
		c.Close() // refused: every connection is busy
	}
}

// admit makes room for c by closing the longest-idle connection, if it
// must and can.
func (l *connLimit) admit(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.state) >= l.max {
		oldest := l.idle.Front()
		if oldest == nil {
			return false
		}
		victim := l.idle.Remove(oldest).(net.Conn)
		delete(l.state, victim)
		victim.Close()
	}
	l.state[c] = nil
	return true
}

// track follows the server's view of each connection.
func (l *connLimit) track(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, open := l.state[c]
	if e != nil {
		l.idle.Remove(e)
		l.state[c] = nil
	}
	switch s {
	case http.StateIdle:
		if open {
			l.state[c] = l.idle.PushBack(c)
		}
	case http.StateClosed, http.StateHijacked:
		delete(l.state, c)
	}
}
