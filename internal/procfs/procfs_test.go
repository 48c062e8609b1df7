package procfs

import (
	"os"
	"testing"
)

func withRoot(t *testing.T, root string) {
	old := Root
	Root = root
	t.Cleanup(func() { Root = old })
}

func TestFixtures(t *testing.T) {
	withRoot(t, "testdata/proc")
	m, err := Triple("net/ipv4/tcp_mem")
	if err != nil || m != [3]int64{1000, 2000, 3000} {
		t.Errorf("tcp_mem %v %v", m, err)
	}
	if v, err := Int("net/ipv4/tcp_max_orphans"); err != nil || v != 131072 {
		t.Errorf("tcp_max_orphans %v %v", v, err)
	}
	b, _ := os.ReadFile("testdata/proc/self/net/protocols")
	p, err := ParseProtocols(b)
	if err != nil {
		t.Fatal(err)
	}
	if tcp := p["TCP"]; tcp != (Protocol{Sockets: 153, Memory: 3330, Pressure: "yes"}) {
		t.Errorf("TCP %+v", tcp)
	}
	if p["PACKET"].Memory != -1 || p["UDP"].Pressure != "NI" {
		t.Errorf("%+v", p)
	}
	c, err := MIB("self")
	if err != nil {
		t.Fatal(err)
	}
	if c.Get("TcpExt", "TCPAbortOnMemory") != 62 || c.Get("TcpExt", "TCPRcvQDrop") != 451 || c.Get("Tcp", "ActiveOpens") != 150 {
		t.Errorf("%v", c)
	}
	if int64(c.Get("Tcp", "MaxConn")) != -1 {
		t.Errorf("MaxConn %d", c.Get("Tcp", "MaxConn"))
	}
	d := c.Sub(Counters{"TcpExt": {"TCPAbortOnMemory": 60}})
	if d.Get("TcpExt", "TCPAbortOnMemory") != 2 {
		t.Errorf("delta %v", d)
	}
}

func TestMalformed(t *testing.T) {
	if _, err := ParseProtocols([]byte("nonsense\n")); err == nil {
		t.Error("a file without the protocols header parsed")
	}
	if err := ParseMIB([]byte("TcpExt: A B\nTcpExt: 1\n"), Counters{}); err == nil {
		t.Error("a values line shorter than its names parsed")
	}
}

// The real files parse (no root needed).
func TestLive(t *testing.T) {
	if _, err := os.Stat("/proc/net/protocols"); err != nil {
		t.Skip("no /proc")
	}
	if p, err := Protocols(); err != nil || p["TCP"].Pressure == "" {
		t.Errorf("protocols: %v %+v", err, p["TCP"])
	}
	if c, err := MIB("self"); err != nil || c["TcpExt"] == nil {
		t.Errorf("mib: %v", err)
	}
}
