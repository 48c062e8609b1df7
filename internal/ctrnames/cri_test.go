package ctrnames

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI is a CRI runtime that knows a fixed set of pods and containers and
// answers the two calls a Resolver makes, after delay if one is set.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer

	mu    sync.Mutex
	pods  []*runtimeapi.PodSandbox
	ctrs  []*runtimeapi.Container
	delay time.Duration

	podLists  atomic.Int64  // ListPodSandbox calls: one per fetch
	ctrLists  atomic.Int64  // ListContainers calls
	abandoned atomic.Int64  // calls whose client gave up during the delay
	entered   chan struct{} // gets a value when a delayed call starts
}

func (f *fakeCRI) wait(ctx context.Context) error {
	f.mu.Lock()
	d := f.delay
	f.mu.Unlock()
	if d == 0 {
		return nil
	}
	select {
	case f.entered <- struct{}{}:
	default:
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		f.abandoned.Add(1)
		return ctx.Err()
	}
}

func (f *fakeCRI) ListPodSandbox(ctx context.Context, _ *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f.podLists.Add(1)
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &runtimeapi.ListPodSandboxResponse{Items: append([]*runtimeapi.PodSandbox(nil), f.pods...)}, nil
}

func (f *fakeCRI) ListContainers(ctx context.Context, _ *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f.ctrLists.Add(1)
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &runtimeapi.ListContainersResponse{Containers: append([]*runtimeapi.Container(nil), f.ctrs...)}, nil
}

func (f *fakeCRI) setDelay(d time.Duration) {
	f.mu.Lock()
	f.delay = d
	f.mu.Unlock()
}

// shortTempDir is a directory for a unix socket, whose path must stay under
// 108 bytes (t.TempDir's names the test, and can pass that).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctrnames")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serve starts f on a unix socket and returns the socket's path; stop ends
// the server (also done at cleanup).
func serve(t *testing.T, f *fakeCRI) (socket string, stop func()) {
	t.Helper()
	socket = filepath.Join(shortTempDir(t), "cri.sock")
	return socket, serveAt(t, f, socket)
}

// serveAt starts f on the unix socket at path.
func serveAt(t *testing.T, f *fakeCRI, socket string) (stop func()) {
	t.Helper()
	if f.entered == nil {
		f.entered = make(chan struct{}, 1)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

const (
	kubeletPodUID = "0b5c5f0e-3c1a-4b8e-9a7d-2f6e1c0d9b8a"
	crictlPodUID  = "7e8f9a0b-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
)

// twoPods is what a runtime would list: a pod made by the kubelet, whose
// pod and containers carry its labels, and one made by crictl, with
// metadata only.
func twoPods(t *testing.T) (f *fakeCRI, kubeletSandbox, kubeletCtr, crictlCtr string) {
	kubeletSandbox, kubeletCtr = randomID(t), randomID(t)
	crictlSandbox, crictlCtr := randomID(t), randomID(t)
	f = &fakeCRI{
		pods: []*runtimeapi.PodSandbox{
			{
				Id:       kubeletSandbox,
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "web-0", Namespace: "shop", Uid: kubeletPodUID},
				State:    runtimeapi.PodSandboxState_SANDBOX_READY,
				Labels: map[string]string{
					labelPodName: "web-0", labelPodNamespace: "shop", labelPodUID: kubeletPodUID,
					"app": "web",
				},
			},
			{
				Id:       crictlSandbox,
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "debug", Namespace: "tools", Uid: crictlPodUID},
				State:    runtimeapi.PodSandboxState_SANDBOX_READY,
			},
		},
		ctrs: []*runtimeapi.Container{
			{
				Id:           kubeletCtr,
				PodSandboxId: kubeletSandbox,
				Metadata:     &runtimeapi.ContainerMetadata{Name: "api", Attempt: 2},
				State:        runtimeapi.ContainerState_CONTAINER_RUNNING,
				Labels: map[string]string{
					labelPodName: "web-0", labelPodNamespace: "shop", labelPodUID: kubeletPodUID,
					labelContainerName: "api",
				},
			},
			{
				Id:           crictlCtr,
				PodSandboxId: crictlSandbox,
				Metadata:     &runtimeapi.ContainerMetadata{Name: "shell"},
				State:        runtimeapi.ContainerState_CONTAINER_RUNNING,
			},
		},
	}
	return f, kubeletSandbox, kubeletCtr, crictlCtr
}

// criResolver asks only the given sockets, and has no files to read.
func criResolver(t *testing.T, o Options, sockets ...string) *Resolver {
	t.Helper()
	o.CRIEndpoints = sockets
	o.Root = t.TempDir()
	r := New(o)
	t.Cleanup(func() { r.Close() })
	return r
}

func TestCRINames(t *testing.T) {
	f, sandbox, kubeletCtr, crictlCtr := twoPods(t)
	socket, _ := serve(t, f)
	r := criResolver(t, Options{}, socket)
	ctx := context.Background()
	cases := []struct {
		what, runtime, id, podUID string
		want                      Names
	}{
		{"container made by the kubelet", "containerd", kubeletCtr, kubeletPodUID,
			Names{Name: "api", Pod: "web-0", Namespace: "shop", Source: SourceCRI}},
		{"container made by crictl: names from metadata", "cri-o", crictlCtr, "",
			Names{Name: "shell", Pod: "debug", Namespace: "tools", Source: SourceCRI}},
		{"pod sandbox", "kubernetes", sandbox, kubeletPodUID,
			Names{Pod: "web-0", Namespace: "shop", Source: SourceCRI}},
		{"pod by UID", "kubernetes", "", crictlPodUID,
			Names{Pod: "debug", Namespace: "tools", Source: SourceCRI}},
	}
	for _, c := range cases {
		got, ok := r.Lookup(ctx, c.runtime, c.id, c.podUID)
		if !ok || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.what, got, ok, c.want)
		}
	}
	if got, ok := r.Lookup(ctx, "containerd", randomID(t), ""); ok {
		t.Errorf("unknown id named %+v", got)
	}
	// Every answer came from one fetch of the lists.
	if p, c := f.podLists.Load(), f.ctrLists.Load(); p != 1 || c != 1 {
		t.Errorf("%d ListPodSandbox and %d ListContainers calls, want 1 and 1", p, c)
	}
}

// A runtime that is not there is no error and costs no time.
func TestCRIDownAnswersQuickly(t *testing.T) {
	dir := shortTempDir(t)
	missing := filepath.Join(dir, "missing.sock")
	// A socket file left behind by a runtime that died: connect is refused.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	for _, socket := range []string{missing, stale} {
		r := criResolver(t, Options{Timeout: 5 * time.Second}, socket)
		start := time.Now()
		got, ok := r.Lookup(context.Background(), "containerd", randomID(t), "")
		took := time.Since(start)
		if ok {
			t.Errorf("%s: named %+v", socket, got)
		}
		if took > time.Second {
			t.Errorf("%s: Lookup took %v with nothing to wait for", filepath.Base(socket), took)
		}
	}
}

// A runtime that hangs costs a Lookup its timeout at most, and holds up
// neither answers from the cache nor Close.
func TestCRIHungRuntime(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f, _, known, _ := twoPods(t)
	socket, stopServer := serve(t, f)
	const timeout = 300 * time.Millisecond
	r := New(Options{
		CRIEndpoints: []string{socket},
		Root:         t.TempDir(),
		Timeout:      timeout,
		Refresh:      20 * time.Millisecond,
	})
	ctx := context.Background()
	if _, ok := r.Lookup(ctx, "containerd", known, ""); !ok {
		t.Fatal("known container not named")
	}

	f.setDelay(time.Minute)
	time.Sleep(30 * time.Millisecond) // the list may be fetched again
	type result struct {
		ok   bool
		took time.Duration
	}
	hung := make(chan result)
	go func() {
		start := time.Now()
		_, ok := r.Lookup(ctx, "containerd", randomID(t), "")
		hung <- result{ok, time.Since(start)}
	}()
	select {
	case <-f.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the unknown id did not make the resolver fetch the list again")
	}
	start := time.Now()
	got, ok := r.Lookup(ctx, "containerd", known, "")
	if took := time.Since(start); !ok || got.Name != "api" || took > 50*time.Millisecond {
		t.Errorf("cached id while the runtime hangs: %+v, %v in %v; want api at once", got, ok, took)
	}
	res := <-hung
	if res.ok {
		t.Error("unknown id named by a hung runtime")
	}
	if res.took < timeout-50*time.Millisecond || res.took > timeout+500*time.Millisecond {
		t.Errorf("Lookup against a hung runtime took %v, want about its timeout %v", res.took, timeout)
	}

	// Close ends a fetch under way rather than waiting for the runtime.
	time.Sleep(30 * time.Millisecond)
	go r.Lookup(ctx, "containerd", randomID(t), "")
	<-f.entered
	start = time.Now()
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("Close took %v while a fetch hung", took)
	}
	// The server hears of the cancel a moment later.
	for deadline := time.Now().Add(time.Second); f.abandoned.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if f.abandoned.Load() < 2 {
		t.Errorf("%d hung calls were given up by the client, want 2", f.abandoned.Load())
	}
	if got, ok := r.Lookup(ctx, "containerd", known, ""); !ok || got.Name != "api" {
		t.Errorf("after Close, the cache answers: %+v, %v", got, ok)
	}
	stopServer()
}

// However many unknown ids are asked for, the runtime's lists are fetched
// at most once per refresh interval.
func TestCRIFetchesAtMostOncePerRefresh(t *testing.T) {
	f, _, _, _ := twoPods(t)
	socket, _ := serve(t, f)
	const refresh = 100 * time.Millisecond
	r := criResolver(t, Options{Refresh: refresh, MissTTL: time.Hour}, socket)

	start := time.Now()
	var lookups atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 700*time.Millisecond {
				if _, ok := r.Lookup(context.Background(), "containerd", randomID(t), ""); ok {
					t.Error("a random id was named")
					return
				}
				lookups.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	fetches := f.podLists.Load()
	allowed := 1 + int64(elapsed/refresh)
	t.Logf("%d lookups of unknown ids in %v: %d fetches (at most %d allowed)", lookups.Load(), elapsed, fetches, allowed)
	if fetches > allowed {
		t.Errorf("%d fetches in %v, more than one per %v", fetches, elapsed, refresh)
	}
	if fetches < 3 {
		t.Errorf("only %d fetches in %v: unknown ids should refresh the list every %v", fetches, elapsed, refresh)
	}
	if lookups.Load() < 10*fetches {
		t.Errorf("only %d lookups: the test did not flood the resolver", lookups.Load())
	}
}

// An id no one knows is not asked about again for MissTTL, even when the
// list could be fetched again; after that, it is.
func TestCRIMissesAreCachedForAWhile(t *testing.T) {
	f, sandbox, _, _ := twoPods(t)
	socket, _ := serve(t, f)
	const missTTL = 300 * time.Millisecond
	r := criResolver(t, Options{Refresh: 10 * time.Millisecond, MissTTL: missTTL}, socket)
	ctx := context.Background()
	late := randomID(t)
	if _, ok := r.Lookup(ctx, "containerd", late, ""); ok {
		t.Fatal("unknown id named")
	}
	f.mu.Lock()
	f.ctrs = append(f.ctrs, &runtimeapi.Container{
		Id: late, PodSandboxId: sandbox, Metadata: &runtimeapi.ContainerMetadata{Name: "late"},
	})
	f.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	if _, ok := r.Lookup(ctx, "containerd", late, ""); ok {
		t.Error("a cached miss was asked again before MissTTL")
	}
	if n := f.podLists.Load(); n != 1 {
		t.Errorf("%d fetches for one id asked twice within MissTTL, want 1", n)
	}
	time.Sleep(missTTL)
	got, ok := r.Lookup(ctx, "containerd", late, "")
	if want := (Names{Name: "late", Pod: "web-0", Namespace: "shop", Source: SourceCRI}); !ok || got != want {
		t.Errorf("after MissTTL: %+v, %v; want %+v", got, ok, want)
	}
}

// A container the runtime has forgotten (it exited; its sockets may linger)
// keeps the name it had, though it is looked up again after HitTTL.
func TestCRIExitedContainerKeepsItsName(t *testing.T) {
	f, _, known, _ := twoPods(t)
	socket, _ := serve(t, f)
	r := criResolver(t, Options{Refresh: time.Millisecond, HitTTL: 50 * time.Millisecond}, socket)
	ctx := context.Background()
	if _, ok := r.Lookup(ctx, "containerd", known, ""); !ok {
		t.Fatal("known container not named")
	}
	f.mu.Lock()
	f.ctrs = f.ctrs[1:]
	f.mu.Unlock()
	time.Sleep(80 * time.Millisecond)
	// An unknown id makes the resolver fetch the lists, which now lack the
	// container.
	if _, ok := r.Lookup(ctx, "containerd", randomID(t), ""); ok {
		t.Fatal("unknown id named")
	}
	if n := f.podLists.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	time.Sleep(5 * time.Millisecond) // past Refresh
	got, ok := r.Lookup(ctx, "containerd", known, "")
	if !ok || got.Name != "api" || got.Pod != "web-0" {
		t.Errorf("exited container: %+v, %v; want its old names", got, ok)
	}
	if n := f.podLists.Load(); n != 3 {
		t.Errorf("%d fetches, want 3: after HitTTL the resolver should ask again", n)
	}
}

// With two runtimes, one hung, the other's answers come without waiting.
func TestCRIOneHungRuntimeDoesNotDelayAnother(t *testing.T) {
	hung, _, _, _ := twoPods(t)
	hung.setDelay(time.Minute)
	hungSocket, _ := serve(t, hung)
	working, _, known, _ := twoPods(t)
	workingSocket, _ := serve(t, working)
	r := criResolver(t, Options{Timeout: 2 * time.Second}, hungSocket, workingSocket)
	start := time.Now()
	got, ok := r.Lookup(context.Background(), "containerd", known, "")
	if took := time.Since(start); !ok || got.Name != "api" || took > time.Second {
		t.Errorf("%+v, %v in %v; want api well within the timeout", got, ok, took)
	}
}

// The caller's context bounds a Lookup too.
func TestLookupHonoursCallerContext(t *testing.T) {
	f, _, _, _ := twoPods(t)
	f.setDelay(time.Minute)
	socket, _ := serve(t, f)
	r := criResolver(t, Options{Timeout: 10 * time.Second}, socket)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, ok := r.Lookup(ctx, "containerd", randomID(t), ""); ok {
		t.Error("named by a hung runtime")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Lookup took %v with a 100ms context", took)
	}
}

// A miss because the caller gave up is not remembered: the next caller,
// with time to wait, gets the answer.
func TestCallerGivingUpIsNotAMiss(t *testing.T) {
	f, _, known, _ := twoPods(t)
	f.setDelay(300 * time.Millisecond)
	socket, _ := serve(t, f)
	r := criResolver(t, Options{Timeout: 5 * time.Second, MissTTL: time.Hour}, socket)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, ok := r.Lookup(ctx, "containerd", known, ""); ok {
		t.Fatal("named before the runtime answered")
	}
	if got, ok := r.Lookup(context.Background(), "containerd", known, ""); !ok || got.Name != "api" {
		t.Errorf("second lookup, with time: %+v, %v; want api", got, ok)
	}
}

// Lookups racing Close neither panic nor leave a fetch running, and a
// Lookup after Close asks no runtime.
func TestCloseDuringLookups(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	f, _, _, _ := twoPods(t)
	f.setDelay(20 * time.Millisecond)
	socket, stopServer := serve(t, f)
	defer stopServer()
	r := New(Options{CRIEndpoints: []string{socket}, Root: t.TempDir(), Refresh: time.Millisecond, MissTTL: time.Nanosecond})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r.Lookup(context.Background(), "containerd", randomID(t), "")
			}
		}()
	}
	time.Sleep(150 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	before := f.podLists.Load()
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	if after := f.podLists.Load(); after != before {
		t.Errorf("%d fetches after Close", after-before)
	}
	if before < 2 {
		t.Errorf("only %d fetches before Close: the lookups did not exercise the runtime", before)
	}
}

// A runtime that was dead when first asked (its socket left behind,
// refusing connections) is asked again, and answers, soon after it is back.
func TestCRIRuntimeComesBack(t *testing.T) {
	socket := filepath.Join(shortTempDir(t), "cri.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	r := criResolver(t, Options{Refresh: 50 * time.Millisecond, MissTTL: time.Nanosecond}, socket)
	f, _, known, _ := twoPods(t)
	if _, ok := r.Lookup(context.Background(), "containerd", known, ""); ok {
		t.Fatal("named by a dead runtime")
	}

	os.Remove(socket)
	serveAt(t, f, socket)
	start := time.Now()
	for {
		got, ok := r.Lookup(context.Background(), "containerd", known, "")
		if ok {
			if got.Name != "api" {
				t.Errorf("named %+v", got)
			}
			t.Logf("answered %v after the runtime came back", time.Since(start))
			return
		}
		// gRPC's default back-off would wait a second after the one
		// failed connect, and longer after more.
		if time.Since(start) > 700*time.Millisecond {
			t.Fatal("the runtime, back, was not asked again within 700ms")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
