// Package procfs reads the few /proc files tcpmemtrace needs: the TCP memory
// sysctls (in pages), /proc/net/protocols and the MIB counters.
package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Root is where proc is mounted; tests point it at fixtures.
var Root = "/proc"

func path(p string) string { return Root + "/" + p }

// Triple reads a three-value sysctl such as net/ipv4/tcp_mem.
func Triple(name string) ([3]int64, error) { return TripleFile(path("sys/" + name)) }

// TripleFile reads a file of three integers.
func TripleFile(file string) ([3]int64, error) {
	var v [3]int64
	b, err := os.ReadFile(file)
	if err != nil {
		return v, err
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return v, fmt.Errorf("%s: want 3 values, got %q", file, strings.TrimSpace(string(b)))
	}
	for i := range f {
		if v[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			return v, fmt.Errorf("%s: %w", file, err)
		}
	}
	return v, nil
}

// Int reads a single-value sysctl such as net/ipv4/tcp_max_orphans.
func Int(name string) (int64, error) { return IntFile(path("sys/" + name)) }

// IntFile reads a file holding one integer.
func IntFile(file string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", file, err)
	}
	return v, nil
}

// Fields reads "key<sep> value ..." lines (/proc/meminfo with ":") into
// key -> first value.
func Fields(file, sep string) (map[string]int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, sep)
		if !ok {
			continue
		}
		if f := strings.Fields(v); len(f) > 0 {
			out[strings.TrimSpace(k)], _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return out, nil
}

// Sockstat reads /proc/net/sockstat(6) into "TCP inuse" -> value.
func Sockstat(file string) (map[string]int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		proto, rest, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseInt(f[i+1], 10, 64); err == nil {
				out[proto+" "+f[i]] = v
			}
		}
	}
	return out, nil
}

// Protocol is one row of /proc/net/protocols.
type Protocol struct {
	Sockets int64
	// Memory is the protocol's allocated memory in pages, -1 when it is not accounted.
	Memory int64
	// Pressure is "yes"/"no", or "NI" when the protocol has no pressure flag.
	Pressure string
}

// Protocols parses /proc/net/protocols of the reader's network namespace
// (the memory and pressure columns are global).
func Protocols() (map[string]Protocol, error) {
	b, err := os.ReadFile(path("net/protocols"))
	if err != nil {
		return nil, err
	}
	return ParseProtocols(b)
}

// ParseProtocols parses the text of /proc/net/protocols.
func ParseProtocols(b []byte) (map[string]Protocol, error) {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) < 1 {
		return nil, fmt.Errorf("protocols: empty")
	}
	head := strings.Fields(string(lines[0]))
	col := func(name string) int {
		for i, h := range head {
			if h == name {
				return i
			}
		}
		return -1
	}
	cSock, cMem, cPress := col("sockets"), col("memory"), col("press")
	if head[0] != "protocol" || cSock < 0 || cMem < 0 || cPress < 0 {
		return nil, fmt.Errorf("protocols: unexpected header %q", lines[0])
	}
	out := make(map[string]Protocol, len(lines)-1)
	for _, l := range lines[1:] {
		f := strings.Fields(string(l))
		if len(f) <= cPress {
			continue
		}
		var p Protocol
		p.Sockets, _ = strconv.ParseInt(f[cSock], 10, 64)
		p.Memory, _ = strconv.ParseInt(f[cMem], 10, 64)
		p.Pressure = f[cPress]
		out[f[0]] = p
	}
	return out, nil
}

// Counters maps "TcpExt" -> "TCPAbortOnMemory" -> value.
type Counters map[string]map[string]uint64

// Get returns one counter, 0 when absent.
func (c Counters) Get(group, name string) uint64 { return c[group][name] }

// Sub returns c - base for every counter present in both.
func (c Counters) Sub(base Counters) Counters {
	out := Counters{}
	for g, m := range c {
		out[g] = map[string]uint64{}
		for k, v := range m {
			out[g][k] = v - base[g][k]
		}
	}
	return out
}

// MIB reads /proc/<pid>/net/{netstat,snmp} ("self" for the caller's
// network namespace): the per-namespace TCP counters.
func MIB(pid string) (Counters, error) {
	out := Counters{}
	for _, f := range []string{"netstat", "snmp"} {
		b, err := os.ReadFile(path(pid + "/net/" + f))
		if err != nil {
			return nil, err
		}
		if err := ParseMIB(b, out); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
	}
	return out, nil
}

// ParseMIB reads the "Group: names" / "Group: values" line pairs of
// /proc/net/netstat and /proc/net/snmp into into.
func ParseMIB(b []byte, into Counters) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var names []string
	var group string
	for sc.Scan() {
		g, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if names == nil || g != group {
			group, names = g, f
			continue
		}
		if len(f) != len(names) {
			return fmt.Errorf("%s: %d names, %d values", g, len(names), len(f))
		}
		m := into[g]
		if m == nil {
			m = map[string]uint64{}
			into[g] = m
		}
		for i, n := range names {
			// Some snmp values (MaxConn) are -1; keep their bits.
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				u, err2 := strconv.ParseUint(f[i], 10, 64)
				if err2 != nil {
					return fmt.Errorf("%s %s: %w", g, n, err)
				}
				v = int64(u)
			}
			m[n] = uint64(v)
		}
		names = nil
	}
	return sc.Err()
}
