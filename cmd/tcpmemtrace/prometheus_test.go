package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/privtest"
	"github.com/tcpmemtrace/tcpmemtrace/internal/testsupport/workload"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPrometheus runs a real Prometheus scraping target every second.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (apt-get install prometheus)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: tcpmemtrace
    static_configs: [{targets: ["%s"]}]
`, target)), 0o644)
	api := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+api)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + api + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return "http://" + api
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready:\n%s", logs.String())
		}
	}
}

// query runs an instant PromQL query and returns the single value.
func query(t *testing.T, api, q string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(api + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Status != "success" {
		t.Fatalf("%s: %v %+v", q, err, out)
	}
	if len(out.Data.Result) != 1 {
		return 0, false
	}
	v, err := strconv.ParseFloat(out.Data.Result[0].Value[1].(string), 64)
	return v, err == nil
}

// TestPrometheusScrapesTheReproduction: a real Prometheus scrapes the
// exporter during the tcp_mem reproduction; its stored series show the
// kernel's abort count and memory above the lowered hard limit.
func TestPrometheusScrapesTheReproduction(t *testing.T) {
	privtest.Require(t)
	target := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	api := startPrometheus(t, target)
	// Prometheus applies new targets on a 5s tick: wait for its first
	// scrape (up = 0, nothing listens yet) so the traffic window is sampled.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if _, ok := query(t, api, `up`); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus never scraped the target")
		}
	}
	const aborts = `tcpmemtrace_aborts_total{cause="memory"}`
	beforeStop = func(r *e2e) {
		want := float64(r.seen.Aborts(t, r.res))
		// Scraped once a second: wait until the last value is in.
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(250 * time.Millisecond) {
			if v, ok := query(t, api, aborts); ok && v == want {
				break
			}
			if time.Now().After(deadline) {
				v, _ := query(t, api, aborts)
				up, _ := query(t, api, `up`)
				resp, _ := http.Get(api + "/api/v1/targets")
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("prometheus has %s = %v, the kernel %v (up %v)\n%s", aborts, v, want, up, b)
			}
		}
		resp, err := http.Get("http://" + target + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		exposition, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if promtool, err := exec.LookPath("promtool"); err == nil {
			check := exec.Command(promtool, "check", "metrics")
			check.Stdin = bytes.NewReader(exposition)
			if out, err := check.CombinedOutput(); err != nil {
				t.Errorf("promtool check metrics: %v\n%s", err, out)
			}
		}
	}
	s := workload.Scenario{Kind: workload.OOM, Conns: 300, WriteFor: 4 * time.Second}
	r := runE2E(t, s, readerInRoot, func(r *e2e) []string {
		return []string{"--netns", fmt.Sprint(r.env.NetNS), "--metrics-addr", target}
	})

	// The counter's increase over the run, exactly: max - min of its samples
	// (increase() extrapolates).
	rng := `[10m]`
	inc, ok1 := query(t, api, `max_over_time(`+aborts+rng+`) - min_over_time(`+aborts+rng+`)`)
	if want := float64(r.seen.Aborts(t, r.res)); !ok1 || inc != want || want == 0 {
		t.Errorf("abort counter increase %v, want %v of ΔTCPAbortOnMemory", inc, want)
	}
	peak, ok2 := query(t, api, `max_over_time(tcpmemtrace_tcp_memory_allocated_bytes`+rng+`)`)
	low, ok3 := query(t, api, `min_over_time(tcpmemtrace_tcp_mem_bytes{watermark="high"}`+rng+`)`)
	if !ok2 || !ok3 || low != 3000*float64(os.Getpagesize()) || peak <= low {
		t.Errorf("allocated peaked at %v bytes; lowered high watermark recorded as %v (want 3000 pages)", peak, low)
	}
	t.Logf("prometheus: abort increase %v, allocated peak %v bytes > high %v", inc, peak, low)
}
