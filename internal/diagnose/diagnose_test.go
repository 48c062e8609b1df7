package diagnose

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
)

func fixture(t *testing.T, name string) Report {
	t.Helper()
	in, err := GatherFixture("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return Analyze(in, 10)
}

// has finds a verdict of that severity containing every part.
func has(t *testing.T, r Report, sev string, parts ...string) {
	t.Helper()
	for _, v := range r.Verdicts {
		ok := v.Severity == sev
		for _, p := range parts {
			ok = ok && strings.Contains(v.Text, p)
		}
		if ok {
			return
		}
	}
	t.Errorf("no %s verdict with %q in %+v", sev, parts, r.Verdicts)
}

func command(t *testing.T, r Report, want string) {
	t.Helper()
	for _, m := range r.Remedies {
		if m.Command == want {
			return
		}
	}
	t.Errorf("no remedy %q in %+v", want, r.Remedies)
}

func TestHealthy(t *testing.T) {
	r := fixture(t, "healthy")
	has(t, r, OK, "buffer pool at 0% of high")
	has(t, r, OK, "orphans at 0% of max")
	if len(r.Remedies) != 0 {
		t.Errorf("remedies for a healthy machine: %+v", r.Remedies)
	}
	if r.Pool.Bytes != 20*4096 || r.Pool.LimitBytes[2] != 380000*4096 || r.Sockets != 12 {
		t.Errorf("pool %+v sockets %d", r.Pool, r.Sockets)
	}
}

// Pages, not bytes: 368600 pages of 380000 is 97%, and the slow consumer
// holding the memory (its sockets have had unread data and nothing new for
// 93 s and more) comes first among the remedies.
func TestPoolAt97PercentWithSlowConsumer(t *testing.T) {
	r := fixture(t, "pool97")
	has(t, r, Warning, "under pressure", "368600 pages", "97% of high")
	has(t, r, Warning, "slow consumer: pid 4242 (nginx) in shop/web-7d9f/nginx has not read for 93 s with 1.2 GiB queued on 3 sockets (83% of TCP memory)")
	has(t, r, Info, "3 pressure episodes since boot, 12.3s")
	if r.Remedies[0].Command != "" || !strings.Contains(r.Remedies[0].Text, "pid 4242 (nginx) in shop/web-7d9f/nginx has not read for 93 s") {
		t.Errorf("first remedy %+v, want the slow consumer", r.Remedies[0])
	}
	// 16 GiB RAM: double the pool (760000 pages = 2.9 GiB, 18% of RAM), ratios kept.
	command(t, r, `sysctl -w net.ipv4.tcp_mem="380000 506666 760000"`)
	// 310 sockets, both directions full, into 1.4 GiB: 2.3 MiB each, 2 MiB.
	command(t, r, `sysctl -w net.ipv4.tcp_rmem="4096 131072 2097152"`)
	command(t, r, `sysctl -w net.ipv4.tcp_wmem="4096 16384 2097152"`)
	if o := r.TopOwners[0]; o.PID != 4242 || o.Sockets != 3 || o.RecvBytes != 3*(400<<20) || o.StalledSockets != 3 ||
		o.StalledBytes != 3*(400<<20) || o.StalledMs != 93000 {
		t.Errorf("top owner %+v", o)
	}
	if s := r.TopSockets[0]; s.Owner == nil || s.Owner.PID != 4242 || s.Queued != 400<<20 || s.State != "ESTAB" || s.StalledMs != 93000 {
		t.Errorf("top socket %+v", s)
	}
	for _, s := range r.TopSockets {
		if s.Owner != nil && s.Owner.PID == 4300 && s.StalledMs != 0 {
			t.Errorf("curl's socket, data 30 ms ago, is stalled: %+v", s)
		}
	}
	// Where the holders live, in JSON and in text.
	if o := r.TopOwners[0]; o.Container == nil || o.Container.PodName != "web-7d9f" || o.Container.Namespace != "shop" ||
		!strings.HasPrefix(o.CgroupPath, "/kubepods.slice/") {
		t.Errorf("top owner's place %+v %+v", o.CgroupPath, o.Container)
	}
	var js, txt bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		TopSockets []struct {
			Owner struct {
				PID       int               `json:"pid"`
				Cgroup    string            `json:"cgroup"`
				Container map[string]string `json:"container"`
			} `json:"owner"`
		} `json:"top_sockets"`
		TopOwners []struct {
			PID            int               `json:"pid"`
			Cgroup         string            `json:"cgroup"`
			Container      map[string]string `json:"container"`
			StalledSockets int               `json:"stalled_sockets"`
			StalledMs      uint64            `json:"stalled_ms"`
		} `json:"top_owners"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if o := back.TopSockets[0].Owner; o.PID != 4242 || !strings.HasPrefix(o.Cgroup, "/kubepods.slice/") || o.Container["name"] != "nginx" {
		t.Errorf("JSON top socket's owner %+v", o)
	}
	if o := back.TopOwners[0]; o.Container["pod_name"] != "web-7d9f" || o.Container["namespace"] != "shop" || o.Cgroup == "" ||
		o.StalledSockets != 3 || o.StalledMs != 93000 {
		t.Errorf("JSON top owner %+v", o)
	}
	if err := r.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"4242 nginx shop/web-7d9f/nginx", "/user.slice/user-0.slice/session-1.scope", "CONTAINER OR CGROUP",
		"NOT READ FOR", "400.0 MiB         93 s  4242 nginx", "192.0 KiB            -  4300 curl"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, txt.String())
		}
	}
}

// The same machine, but the process holding the memory keeps reading
// (data reached each of its sockets 200 ms ago): it is named as the
// holder, never called a slow consumer or stalled, and the remedy asks why
// it reads slower than its peers send.
func TestReadingHolderIsNotStalled(t *testing.T) {
	in, err := GatherFixture("testdata/pool97")
	if err != nil {
		t.Fatal(err)
	}
	for i := range in.Namespaces[0].Sockets {
		in.Namespaces[0].Sockets[i].LastDataRecv = 200 * time.Millisecond
	}
	r := Analyze(in, 10)
	has(t, r, Info, "pid 4242 (nginx) in shop/web-7d9f/nginx holds 1.2 GiB in receive queues over 3 sockets (83% of TCP memory), "+
		"and it is reading: none of them has held unread data for 5 s with nothing new arriving")
	for _, v := range r.Verdicts {
		if strings.Contains(v.Text, "slow consumer") || strings.Contains(v.Text, "has not read") || strings.Contains(v.Text, "4242") && v.Severity != Info {
			t.Errorf("a reading holder blamed: %+v", v)
		}
	}
	if o := r.TopOwners[0]; o.StalledSockets != 0 || o.StalledMs != 0 {
		t.Errorf("top owner %+v", o)
	}
	for _, s := range r.TopSockets {
		if s.StalledMs != 0 {
			t.Errorf("socket %+v stalled", s)
		}
	}
	if m := r.Remedies[0]; !strings.Contains(m.Text, "find why pid 4242 (nginx) in shop/web-7d9f/nginx reads slower than its peers send") {
		t.Errorf("first remedy %+v", m)
	}
	var txt bytes.Buffer
	r.WriteText(&txt)
	if strings.Contains(txt.String(), "has not read") || !strings.Contains(txt.String(), "400.0 MiB            -  4242 nginx") {
		t.Errorf("text:\n%s", txt.String())
	}
}

// Above the hard limit with no RAM to spare: raising tcp_mem is refused.
func TestAboveHighWithoutHeadroom(t *testing.T) {
	r := fixture(t, "above_high_no_ram")
	has(t, r, Critical, "above the hard limit", "400000 pages", "tcp_mem[2] 380000 pages")
	has(t, r, Warning, "900 sockets killed for memory since boot")
	var refused bool
	for _, m := range r.Remedies {
		if strings.Contains(m.Text, "do not raise tcp_mem") && strings.Contains(m.Text, "1.0 GiB") {
			refused = true
		}
		if strings.Contains(m.Command, "tcp_mem") {
			t.Errorf("raising tcp_mem proposed without headroom: %+v", m)
		}
	}
	if !refused {
		t.Errorf("remedies %+v do not refuse to raise tcp_mem", r.Remedies)
	}
	// 5000 sockets into a 1.4 GiB pool: 148 KiB each way, raised to the 1 MiB floor.
	command(t, r, `sysctl -w net.ipv4.tcp_rmem="4096 131072 1048576"`)
}

func TestOrphansAt91Percent(t *testing.T) {
	r := fixture(t, "orphans91")
	has(t, r, Warning, "orphans at 91% of max (59638 of 65536)")
	command(t, r, "sysctl -w net.ipv4.tcp_max_orphans=131072")
}

// Two namespaces: per-namespace figures and counters are summed.
func TestTimeWaitOverNamespaces(t *testing.T) {
	r := fixture(t, "timewait")
	has(t, r, Warning, "TIME-WAIT at 92% of tcp_max_tw_buckets (60000 of 65536)")
	command(t, r, "sysctl -w net.ipv4.tcp_tw_reuse=1")
	if r.Namespaces != 2 || r.Sockets != 74 || r.SinceBoot["TCPAbortOnMemory"] != 12 || r.SinceBoot["PruneCalled"] != 2 {
		t.Errorf("namespaces %d sockets %d since boot %v", r.Namespaces, r.Sockets, r.SinceBoot)
	}
	has(t, r, Warning, "12 sockets killed for memory since boot")
}

func TestOutputs(t *testing.T) {
	r := fixture(t, "pool97")
	var txt, js bytes.Buffer
	if err := r.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TCP MEMORY DIAGNOSIS", "368600 pages = 1.4 GiB in use", "TOP SOCKETS", "4242 nginx", "VERDICT", "REMEDIES"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, txt.String())
		}
	}
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back["pool"].(map[string]any)["pages"].(float64) != 368600 || len(back["verdicts"].([]any)) == 0 {
		t.Errorf("json %v", back["pool"])
	}
}

func TestMissingFiles(t *testing.T) {
	if _, err := GatherFixture(t.TempDir()); err == nil {
		t.Error("an empty tree gathered without error")
	}
}

// Live: the figures are what /proc says (read back-to-back on a quiet host).
func TestLiveFiguresEqualProc(t *testing.T) {
	privtest.Require(t)
	in, err := Gather(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := Analyze(in, 10)
	tcpMem, _ := procfs.Triple("net/ipv4/tcp_mem")
	maxOrph, _ := procfs.Int("net/ipv4/tcp_max_orphans")
	st, err := procfs.Sockstat("/proc/net/sockstat")
	if err != nil {
		t.Fatal(err)
	}
	if r.Pool.Limits != tcpMem || r.Orphans.Max != maxOrph || r.Settings.TCPMem != tcpMem {
		t.Errorf("limits %v/%d, /proc %v/%d", r.Pool.Limits, r.Orphans.Max, tcpMem, maxOrph)
	}
	if d := r.Pool.Pages - st["TCP mem"]; d > 64 || d < -64 {
		t.Errorf("pool %d pages, /proc/net/sockstat %d", r.Pool.Pages, st["TCP mem"])
	}
	if r.Pool.Bytes != r.Pool.Pages*int64(os.Getpagesize()) {
		t.Errorf("bytes %d for %d pages", r.Pool.Bytes, r.Pool.Pages)
	}
	// Our namespace's counters are part of the sum.
	own, err := procfs.MIB("self")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range SinceBootCounters {
		if r.SinceBoot[name] < own.Get("TcpExt", name) {
			t.Errorf("since boot %s = %d < this namespace's %d", name, r.SinceBoot[name], own.Get("TcpExt", name))
		}
	}
	if r.Namespaces < 1 {
		t.Error("no namespace read")
	}
}

// A slow consumer whose comm is an escape sequence is named escaped in the
// text (verdicts and tables), exactly in JSON.
func TestHostileCommEscaped(t *testing.T) {
	in, err := GatherFixture("testdata/pool97")
	if err != nil {
		t.Fatal(err)
	}
	for ino, p := range in.Owners {
		p.Comm = "\x1b]0;owned\a"
		in.Owners[ino] = p
	}
	r := Analyze(in, 10)
	var text, js bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(text.String(), "\x1b\a") || !strings.Contains(text.String(), `\x1b]0;owned\a`) {
		t.Errorf("text:\n%q", text.String())
	}
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.TopOwners[0].Comm != "\x1b]0;owned\a" {
		t.Errorf("JSON: %v %+v", err, back.TopOwners)
	}
}
