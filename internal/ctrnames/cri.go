package ctrnames

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The labels the kubelet puts on every container and pod sandbox it asks a
// CRI runtime for; containerd and CRI-O hand them back in ListContainers
// and ListPodSandbox, and cri-dockerd stores them as docker labels.
const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
)

// criSource asks every CRI endpoint whose socket exists.
type criSource struct {
	endpoints []*criEndpoint
}

// criEndpoint is one runtime's socket, its connection (made on first use
// and kept) and its last lists.
type criEndpoint struct {
	socket string
	list   *snapshot[criList]

	mu   sync.Mutex
	conn *grpc.ClientConn
}

// criList is one runtime's containers and pod sandboxes, by id, and its
// pods by UID.
type criList struct {
	byID  map[string]Names
	byPod map[string]Names
}

func newCRISource(o Options, bg *background) *criSource {
	s := &criSource{}
	for _, socket := range o.CRIEndpoints {
		e := &criEndpoint{socket: socket}
		e.list = &snapshot[criList]{
			fetch:    e.fetch,
			interval: o.Refresh,
			timeout:  o.Timeout,
			bg:       bg,
		}
		s.endpoints = append(s.endpoints, e)
	}
	return s
}

// lookup asks the endpoints at once, so that a hung runtime does not eat
// the time of a working one, and returns with the first answer.
func (s *criSource) lookup(ctx context.Context, id, podUID string) (Names, bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu     sync.Mutex
		answer Names
		found  bool
		wg     sync.WaitGroup
	)
	for _, e := range s.endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n Names
			ok := e.list.find(ctx, func(l criList) bool {
				var ok bool
				if id != "" {
					n, ok = l.byID[id]
				} else {
					n, ok = l.byPod[podUID]
				}
				return ok
			})
			if ok {
				mu.Lock()
				answer, found = n, true
				mu.Unlock()
				cancel() // the others stop waiting
			}
		}()
	}
	wg.Wait()
	return answer, found
}

func (s *criSource) close() error {
	var errs []error
	for _, e := range s.endpoints {
		e.mu.Lock()
		if e.conn != nil {
			errs = append(errs, e.conn.Close())
			e.conn = nil
		}
		e.mu.Unlock()
	}
	return errors.Join(errs...)
}

// client returns the endpoint's connection, made the first time. No socket,
// no connection: most nodes run one of the well-known runtimes.
func (e *criEndpoint) client() (runtimeapi.RuntimeServiceClient, error) {
	if _, err := os.Stat(e.socket); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil {
		conn, err := grpc.NewClient("unix://"+e.socket,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// A runtime restarted is seen again within seconds, not after
			// gRPC's default back-off of up to two minutes.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: time.Second,
			}),
			// The kubelet's limit: a node's list of containers can pass
			// gRPC's default 4 MiB.
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)),
		)
		if err != nil {
			return nil, err
		}
		e.conn = conn
	}
	return runtimeapi.NewRuntimeServiceClient(e.conn), nil
}

// fetch lists the runtime's pod sandboxes and containers. Container labels
// name the pod when the kubelet made the container; the sandbox's metadata
// names it otherwise (crictl, tests).
func (e *criEndpoint) fetch(ctx context.Context) (criList, error) {
	c, err := e.client()
	if err != nil {
		return criList{}, err
	}
	pods, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return criList{}, fmt.Errorf("%s: ListPodSandbox: %w", e.socket, err)
	}
	ctrs, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return criList{}, fmt.Errorf("%s: ListContainers: %w", e.socket, err)
	}
	l := criList{
		byID:  make(map[string]Names, len(pods.GetItems())+len(ctrs.GetContainers())),
		byPod: make(map[string]Names, len(pods.GetItems())),
	}
	sandboxes := make(map[string]Names, len(pods.GetItems()))
	for _, p := range pods.GetItems() {
		md := p.GetMetadata()
		n := Names{
			Pod:       firstOf(p.GetLabels()[labelPodName], md.GetName()),
			Namespace: firstOf(p.GetLabels()[labelPodNamespace], md.GetNamespace()),
			Source:    SourceCRI,
		}
		sandboxes[p.GetId()] = n
		l.byID[p.GetId()] = n
		if uid := firstOf(p.GetLabels()[labelPodUID], md.GetUid()); uid != "" {
			l.byPod[uid] = n
		}
	}
	for _, ctr := range ctrs.GetContainers() {
		sb := sandboxes[ctr.GetPodSandboxId()]
		labels := ctr.GetLabels()
		l.byID[ctr.GetId()] = Names{
			Name:      firstOf(labels[labelContainerName], ctr.GetMetadata().GetName()),
			Pod:       firstOf(labels[labelPodName], sb.Pod),
			Namespace: firstOf(labels[labelPodNamespace], sb.Namespace),
			Source:    SourceCRI,
		}
	}
	return l, nil
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
