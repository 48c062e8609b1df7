// Package deploy holds no code: its tests check, offline, that the
// Kubernetes manifest, the container build file and the Prometheus alert
// rules beside them are what they claim, and, as root, that the
// DaemonSet's privileges are enough for the binary to trace.
package deploy

import (
	"bytes"
	"debug/elf"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

const (
	manifest   = "kubernetes/tcpmemtrace.yaml"
	dockerfile = "Dockerfile"
	rules      = "prometheus/tcpmemtrace-alerts.yaml"
	ruleTests  = "prometheus/tcpmemtrace-alerts.test.yaml"
)

// daemonSet decodes the manifest strictly: an unknown or misspelt field
// anywhere fails, as does a kind other than the ones expected.
func daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	var ds *appsv1.DaemonSet
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			obj = &corev1.Namespace{}
		case "apps/v1 DaemonSet":
			ds = &appsv1.DaemonSet{}
			obj = ds
		default:
			t.Fatalf("document %d: unexpected %q %q", i, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("document %d (%s): %v", i, tm.Kind, err)
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	return ds
}

// metricsPort is the port in the container's --metrics-addr argument.
func metricsPort(t *testing.T, c corev1.Container) string {
	for _, a := range c.Args {
		if addr, ok := strings.CutPrefix(a, "--metrics-addr="); ok {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			return port
		}
	}
	t.Fatalf("no --metrics-addr=HOST:PORT in %q", c.Args)
	return ""
}

func TestDaemonSet(t *testing.T) {
	ds := daemonSet(t)
	spec := ds.Spec.Template.Spec
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the pod's labels %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	if !spec.HostPID || !spec.HostNetwork {
		t.Error("needs hostPID (owners are host processes) and hostNetwork (tcp_mem is only readable there)")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("no securityContext")
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("privileged: the capabilities suffice")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem not read-only")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation allowed")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Error("capabilities: drop ALL, then add what is needed")
	}
	for _, cap := range sc.Capabilities.Add {
		if cap != "BPF" && cap != "PERFMON" {
			t.Errorf("capability %s beyond BPF and PERFMON", cap)
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			t.Errorf("%s: request %v, limit %v", r, req.String(), lim.String())
		}
	}

	// Every mount is a read-only host path, and the ones the tool reads are there.
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	mounted := map[string]bool{}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok || v.HostPath == nil || !m.ReadOnly || v.HostPath.Path != m.MountPath {
			t.Errorf("mount %+v of %+v: want a read-only host path at the same place", m, v)
		}
		mounted[m.MountPath] = true
	}
	for _, p := range []string{"/sys/kernel/btf", "/sys/fs/cgroup", "/sys/kernel/tracing"} {
		if !mounted[p] {
			t.Errorf("%s not mounted", p)
		}
	}

	// The port served, declared, probed and announced to Prometheus agree.
	port := metricsPort(t, c)
	if len(c.Ports) != 1 || strconv.Itoa(int(c.Ports[0].ContainerPort)) != port {
		t.Errorf("ports %+v, --metrics-addr port %s", c.Ports, port)
	}
	if a := ds.Spec.Template.Annotations["prometheus.io/port"]; a != port {
		t.Errorf("prometheus.io/port %q, --metrics-addr port %s", a, port)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/metrics" || p.HTTPGet.Port.String() != c.Ports[0].Name {
		t.Errorf("readiness probe %+v", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != c.Ports[0].Name {
		t.Errorf("liveness probe %+v", p)
	}

	// A pinned image, and a Go heap limit below the container's.
	if _, tag, ok := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":"); !ok || tag == "" || tag == "latest" {
		t.Errorf("image %q: pin a tag", c.Image)
	}
	var memLimit string
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			memLimit = e.Value
		}
	}
	goLim, err := resource.ParseQuantity(strings.TrimSuffix(memLimit, "B"))
	if lim := c.Resources.Limits[corev1.ResourceMemory]; err != nil || goLim.Cmp(lim) >= 0 || goLim.Value() < lim.Value()/2 {
		t.Errorf("GOMEMLIMIT %q against a memory limit of %v: want it set, below the limit, above half", memLimit, lim.String())
	}
}

// Run by hand (docker run IMAGE), the image listens on loopback only, as
// the README promises; the DaemonSet gives the node's address.
func TestImageDefaultsToLoopback(t *testing.T) {
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := regexp.MustCompile(`(?m)^CMD \[(.*)\]$`).FindStringSubmatch(string(b))
	if cmd == nil || !strings.Contains(cmd[1], `"127.0.0.1:9435"`) || strings.Contains(cmd[1], "0.0.0.0") {
		t.Errorf("default command %v", cmd)
	}
}

// The image build's command makes a static binary, with a Go at least as
// new as go.mod asks, and the final stage copies what it built.
func TestDockerfileBuildsStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a full static build")
	}
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(gomod))
	have := regexp.MustCompile(`(?m)^FROM (?:--platform=\S+ )?golang:(\d+\.\d+)\S* AS build$`).FindStringSubmatch(df)
	if want == nil || have == nil || !versionAtLeast(have[1], want[1]) {
		t.Errorf("builder image Go %v, go.mod asks %v", have, want)
	}
	build := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build .* -o (\S+) \./cmd/tcpmemtrace)$`).FindStringSubmatch(df)
	if build == nil {
		t.Fatal("no RUN CGO_ENABLED=0 go build ... -o OUT ./cmd/tcpmemtrace")
	}
	if !strings.Contains(df, "COPY --from=build "+build[2]+" ") {
		t.Errorf("the final stage does not copy %s", build[2])
	}
	out := filepath.Join(t.TempDir(), "tcpmemtrace")
	cmd := exec.Command("sh", "-c", strings.Replace(build[1], build[2], out, 1))
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/local/go/bin")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build[1], err, o)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("not static: has %v", p.Type)
		}
	}
}

func versionAtLeast(have, want string) bool {
	h, w := strings.SplitN(have, ".", 2), strings.SplitN(want, ".", 2)
	hm, _ := strconv.Atoi(h[0])
	hn, _ := strconv.Atoi(h[1])
	wm, _ := strconv.Atoi(w[0])
	wn, _ := strconv.Atoi(w[1])
	return hm > wm || hm == wm && hn >= wn
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert string `json:"alert"`
		} `json:"rules"`
	} `json:"groups"`
}

type testFile struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string           `json:"alertname"`
			ExpAlerts []map[string]any `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// The rules are valid, and promtool's unit tests see every alert both fire
// and stay quiet.
func TestAlertRules(t *testing.T) {
	var rf ruleFile
	var tf testFile
	for file, v := range map[string]any{rules: &rf, ruleTests: &tf} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			n++
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: tested firing %v, tested quiet %v", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	if n == 0 {
		t.Fatal("no alert rules")
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	for _, args := range [][]string{{"check", "rules", rules}, {"test", "rules", ruleTests}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDaemonSetPrivilegesSuffice runs the binary the way the DaemonSet
// does: root with only the manifest's capabilities in its bounding set, no
// new privileges, a read-only root filesystem, the manifest's arguments.
// Every hook must attach and the metrics must be served.
func TestDaemonSetPrivilegesSuffice(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping a test that loads BPF")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: run the tests with sudo")
	}
	for _, tool := range []string{"setpriv", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (util-linux)", tool)
		}
	}
	// The host role: tracefs mounted where the manifest mounts it from.
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		if err := syscall.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
			t.Fatalf("mounting tracefs: %v", err)
		}
	}
	ds := daemonSet(t)
	c := ds.Spec.Template.Spec.Containers[0]
	bin := filepath.Join(t.TempDir(), "tcpmemtrace")
	build := exec.Command("go", "build", "-o", bin, "./cmd/tcpmemtrace")
	build.Dir = ".."
	build.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/local/go/bin")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// Kubernetes expands $(VAR) in args; the node's address is loopback here.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var args []string
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--metrics-addr=") {
			a = "--metrics-addr=" + addr
		}
		args = append(args, a)
	}
	bounding := "-all"
	for _, cap := range c.SecurityContext.Capabilities.Add {
		bounding += ",+" + strings.ToLower(string(cap))
	}
	script := `mount -o remount,bind,ro / && exec setpriv --no-new-privs --bounding-set="$0" --inh-caps=-all -- "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, bounding, bin}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var exposition string
	for deadline := time.Now().Add(30 * time.Second); exposition == ""; time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			exposition = string(b)
		}
		select {
		case err := <-exited:
			t.Fatalf("exited: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics on %s\n%s", addr, stderr.String())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Errorf("after SIGTERM: %v", err)
	}
	log := stderr.String()
	t.Logf("stderr:\n%s", log)
	for _, bad := range []string{"not attached", "permission denied", "warning"} {
		if strings.Contains(log, bad) {
			t.Errorf("stderr says %q", bad)
		}
	}
	for _, want := range []string{`tcpmemtrace_tcp_mem_bytes{watermark="high"}`, "tcpmemtrace_tcp_max_orphans ", `tcpmemtrace_aborts_total{cause="memory"} 0`} {
		if !strings.Contains(exposition, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}
