package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tcpmemtrace/tcpmemtrace/internal/procfs"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/podmantest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

// holderContainer is one container of the test, as podman sees it.
type holderContainer struct {
	name, id string
	pid      int
}

// Two containers under podman run the same binary (tmt-holder), each
// dropping segments into its own sockets and then holding full queues.
// Their names, as `podman inspect` gives them, must come out in the JSON
// summary, in a replay of the recording (without asking podman), in the
// metrics and in diagnose; each one's drops equal its network namespace's
// counters, and each one's queued-memory gauge equals `ss -tm`'s r + w
// over its sockets.
func TestContainerNamesEndToEnd(t *testing.T) {
	privtest.Require(t)
	podmantest.Require(t, "podman", "runc", "nsenter", "ss")
	// No sysctl is lowered here, but a lowered tcp_mem elsewhere would turn
	// these drops into other ones: not beside the tests that lower it.
	g := workload.LockT(t)
	defer g.Restore()

	tag := podmantest.RandomID(t)[:10]
	image := "localhost/tcpmemtrace-test:" + tag
	podmantest.Image(t, image, "testdata/tmt-holder")

	target := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	rec := t.TempDir() + "/trace.tmtrec"
	cmd, lines, stderr := startJSON(t, "--json", "--metrics-addr", target, "-w", rec)
	rest := make(chan []string, 1)
	go func() {
		var out []string
		for lines.Scan() {
			out = append(out, lines.Text())
		}
		rest <- out
	}()

	var ctrs []holderContainer
	for _, role := range []string{"web", "db"} {
		c := holderContainer{name: "tmt-" + tag + "-" + role}
		podmantest.Start(t, c.name, image)
		f := strings.Fields(podmantest.Run(t, "podman", "inspect", "--format", "{{.Id}} {{.State.Pid}}", c.name))
		if len(f) != 2 {
			t.Fatalf("podman inspect %s: %q", c.name, f)
		}
		c.id = f[0]
		var err error
		if c.pid, err = strconv.Atoi(f[1]); err != nil {
			t.Fatal(err)
		}
		ctrs = append(ctrs, c)
	}
	for _, c := range ctrs {
		waitForLog(t, c.name, "ready")
	}

	// While they hold their queues: the gauge against ss, then diagnose.
	for _, c := range ctrs {
		checkQueuedGauge(t, target, c)
	}
	checkDiagnose(t, ctrs)

	// The drops end when the sockets close; then each namespace's counters
	// are final, read while the container still runs.
	want := map[int]uint64{}
	for _, c := range ctrs {
		podmantest.Run(t, "podman", "kill", "--signal", "USR1", c.name)
		waitForLog(t, c.name, "released")
		mib, err := procfs.MIB(strconv.Itoa(c.pid))
		if err != nil {
			t.Fatal(err)
		}
		want[c.pid] = mib.Get("TcpExt", "TCPRcvQDrop") + mib.Get("TcpExt", "TCPOFODrop")
		if want[c.pid] == 0 {
			t.Fatalf("%s: the kernel counted no drops", c.name)
		}
	}
	metrics := scrapeFamilies(t, target)
	cmd.Process.Signal(os.Interrupt)
	out := <-rest
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tcpmemtrace: %v; stderr: %s", err, stderr.String())
	}

	// The JSON summary: each container's process, by its podman name,
	// with its namespace's drops exactly.
	var summary struct {
		ByProcess []struct {
			PID       int               `json:"pid"`
			Comm      string            `json:"comm"`
			Container map[string]string `json:"container"`
			Drops     map[string]uint64 `json:"drops"`
		} `json:"by_process"`
	}
	if err := json.Unmarshal([]byte(out[len(out)-1]), &summary); err != nil {
		t.Fatalf("summary %q: %v", out[len(out)-1], err)
	}
	for _, c := range ctrs {
		found := false
		for _, p := range summary.ByProcess {
			if p.PID != c.pid {
				continue
			}
			found = true
			if p.Comm != "tmt-holder" || p.Container["runtime"] != "podman" || p.Container["id"] != c.id || p.Container["name"] != c.name {
				t.Errorf("%s: by_process has %s %v", c.name, p.Comm, p.Container)
			}
			if p.Drops["PROTO_MEM"] != want[c.pid] {
				t.Errorf("%s: %d PROTO_MEM drops, its namespace's TCPRcvQDrop+TCPOFODrop %d", c.name, p.Drops["PROTO_MEM"], want[c.pid])
			}
		}
		if !found {
			t.Errorf("%s (pid %d) not in by_process", c.name, c.pid)
		}
		// The metrics: the owner's drop counter under the container's name.
		v, ok := metricValue(metrics, "tcpmemtrace_owner_drops_total", map[string]string{"comm": "tmt-holder", "container": c.name})
		if !ok || v != float64(want[c.pid]) {
			t.Errorf("%s: owner_drops_total %v (present %v), want %d", c.name, v, ok, want[c.pid])
		}
	}

	// A replay has the names without asking podman: they are recorded.
	replay := exec.Command(binary, "-r", rec, "--by", "cgroup")
	text, err := replay.CombinedOutput()
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, text)
	}
	for _, c := range ctrs {
		if !strings.Contains(string(text), c.name) {
			t.Errorf("the replay's text summary lacks %s:\n%s", c.name, text)
		}
	}
}

// waitForLog waits until the container has printed line.
func waitForLog(t *testing.T, name, line string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		logs, _ := exec.Command("podman", "logs", name).CombinedOutput()
		if strings.Contains(string(logs), line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never printed %q: %s", name, line, logs)
		}
	}
}

// skmemRe is the queues ss -tm shows per socket: r (rmem_alloc) and w
// (wmem_queued).
var skmemRe = regexp.MustCompile(`skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f\d+,w(\d+),`)

// ssQueued sums r + w over the sockets of pid in its network namespace.
func ssQueued(t *testing.T, pid int) uint64 {
	t.Helper()
	out, err := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(pid)+"/ns/net", "ss", "-tmpHn").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	var sum uint64
	// A socket is two lines: its addresses and users, then its skmem.
	ls := strings.Split(string(out), "\n")
	for i := 0; i+1 < len(ls); i++ {
		if !strings.Contains(ls[i], "pid="+strconv.Itoa(pid)+",") {
			continue
		}
		m := skmemRe.FindStringSubmatch(ls[i] + ls[i+1])
		if m == nil {
			t.Fatalf("no skmem in %q", ls[i]+ls[i+1])
		}
		r, _ := strconv.ParseUint(m[1], 10, 64)
		w, _ := strconv.ParseUint(m[2], 10, 64)
		sum += r + w
	}
	return sum
}

// checkQueuedGauge waits for the container's queued-memory series, then
// for it to equal ss's figure once the queues have held still over a whole
// poll (the exporter asks sock_diag every 10 s).
func checkQueuedGauge(t *testing.T, target string, c holderContainer) {
	t.Helper()
	labels := map[string]string{"comm": "tmt-holder", "container": c.name}
	var ss, gauge uint64
	steadySince := time.Now()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		now := ssQueued(t, c.pid)
		if now != ss {
			ss, steadySince = now, time.Now()
		}
		v, ok := metricValue(scrapeFamilies(t, target), "tcpmemtrace_owner_queued_bytes", labels)
		gauge = uint64(v)
		if ok && ss > 0 && gauge == ss && time.Since(steadySince) > metricsHoldersEvery+time.Second {
			t.Logf("%s: owner_queued_bytes %d = ss -tm r+w %d", c.name, gauge, ss)
			return
		}
	}
	t.Errorf("%s: owner_queued_bytes %d, ss -tm r+w %d (steady for %v)", c.name, gauge, ss, time.Since(steadySince))
}

// checkDiagnose: each container's process is among the holders, with its
// cgroup and podman name, in JSON and in text.
func checkDiagnose(t *testing.T, ctrs []holderContainer) {
	t.Helper()
	js, err := exec.Command(binary, "diagnose", "--json").Output()
	if err != nil {
		t.Fatalf("diagnose --json: %v", err)
	}
	var r struct {
		TopOwners []struct {
			PID       int               `json:"pid"`
			Cgroup    string            `json:"cgroup"`
			Container map[string]string `json:"container"`
		} `json:"top_owners"`
	}
	if err := json.Unmarshal(js, &r); err != nil {
		t.Fatal(err)
	}
	text, err := exec.Command(binary, "diagnose").Output()
	if err != nil {
		t.Fatalf("diagnose: %v", err)
	}
	for _, c := range ctrs {
		found := false
		for _, o := range r.TopOwners {
			if o.PID == c.pid {
				found = true
				if o.Container["name"] != c.name || o.Container["id"] != c.id || !strings.Contains(o.Cgroup, c.id) {
					t.Errorf("diagnose: %s's holder is %s %v", c.name, o.Cgroup, o.Container)
				}
			}
		}
		if !found {
			t.Errorf("diagnose: %s (pid %d) not among the holders", c.name, c.pid)
		}
		if !regexp.MustCompile(`(?m)^\s+` + strconv.Itoa(c.pid) + `\s+tmt-holder\s.*\s` + regexp.QuoteMeta(c.name) + `$`).Match(text) {
			t.Errorf("diagnose's text has no holder line for %s:\n%s", c.name, text)
		}
	}
}

// scrapeFamilies reads the exporter's metrics.
func scrapeFamilies(t *testing.T, target string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + target + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return fams
}

// metricValue is the value of the one series of name whose labels include
// want.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		if m.Gauge != nil {
			return m.Gauge.GetValue(), true
		}
		return m.Counter.GetValue(), true
	}
	return 0, false
}
