package tracer

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

// object is our ELF, parsed, with the maps that owe nothing to the kernel's
// facts already made.
type object struct {
	spec *ebpf.CollectionSpec
	maps map[string]*ebpf.Map
	err  error
}

func (o object) close() {
	for _, m := range o.maps {
		m.Close()
	}
}

// prepareObject parses the ELF and makes its maps on another goroutine:
// it overlaps with the parse of the kernel's BTF, which it does not need.
func prepareObject(ringBufSize int) <-chan object {
	c := make(chan object, 1)
	go func() {
		var o object
		if o.spec, o.err = loadBpf(); o.err == nil {
			o.spec.Maps[bpfMapEvents].MaxEntries = uint32(ringBufSize)
			o.maps, o.err = premakeMaps(o.spec)
		}
		c <- o
	}()
	return c
}

// premakeMaps creates every map but the data sections (.rodata holds the
// values learnt from the kernel's BTF).
func premakeMaps(spec *ebpf.CollectionSpec) (map[string]*ebpf.Map, error) {
	out := map[string]*ebpf.Map{}
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			for _, m := range out {
				m.Close()
			}
			return nil, fmt.Errorf("creating map %s: %w", name, err)
		}
		out[name] = m
	}
	return out, nil
}

// load configures the programs for this trace and this kernel, keeps the
// ones the chosen hooks need, and loads them.
func (t *Tracer) load(obj object, k *kernelFacts, cache *btf.Cache) (*ebpf.Collection, error) {
	spec := obj.spec
	t.settings = bpfSettings(t.cfg, k, t.hooks)
	// Feature probes: a program of ours that needs the feature, loaded
	// alone. What they find is set before the real programs are verified.
	if !loadsAlone(spec, bpfProgProbeScalarPtrLoad, obj.maps, cache) {
		// Older verifiers refuse loads through pointers to scalars; read
		// those few words with bpf_probe_read_kernel instead.
		t.settings.ScalarPtrProbeRead = 1
		t.info.Notes = append(t.info.Notes, "this kernel's verifier refuses direct loads through pointers to scalars: memory_pressure and tcp_mem are read with bpf_probe_read_kernel")
	}
	if loadsAlone(spec, bpfProgProbeSocketCookie, obj.maps, cache) {
		t.settings.SocketCookieHelper = 1
	} else {
		t.info.Notes = append(t.info.Notes, "tracing programs cannot ask for socket cookies before 5.12: events show a socket's cookie only when something else made one")
	}
	if err := spec.Variables[bpfVarCFG].Set(t.settings); err != nil {
		return nil, fmt.Errorf("configuring the programs: %w", err)
	}
	if err := spec.Variables[bpfVarPressureCur].Set(initialPressure()); err != nil {
		return nil, fmt.Errorf("configuring the programs: %w", err)
	}
	// The iterators run from userspace; the stall counter is attached
	// while under pressure only.
	keep := map[string]bool{bpfProgSnapshotOwners: true, bpfProgSettleOwners: true}
	if _, ok := k.tracepointArgs("sock_send_length"); ok {
		keep[stallsOnly] = true
	}
	for _, h := range t.hooks {
		for _, p := range h.programs {
			keep[p] = true
		}
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	coll, err := loadCollection(spec, obj.maps, cache)
	if err != nil {
		return nil, loadError(err)
	}
	return coll, nil
}

// loadsAlone is a feature probe: whether the kernel takes one program of
// the object, loaded alone with the object's maps.
func loadsAlone(spec *ebpf.CollectionSpec, prog string, maps map[string]*ebpf.Map, cache *btf.Cache) bool {
	probe := spec.Copy()
	probe.Programs = map[string]*ebpf.ProgramSpec{prog: probe.Programs[prog]}
	coll, err := ebpf.NewCollectionWithOptions(probe, ebpf.CollectionOptions{MapReplacements: maps, Cache: cache})
	if err != nil {
		return false
	}
	coll.Close()
	return true
}

// loadCollection creates the remaining maps, then loads the programs in two
// halves at once, balanced by size: the kernel verifies each program on its
// own, and verifying the largest ones is most of the start-up. Both halves
// use the same maps and one parse of the kernel's BTF.
func loadCollection(spec *ebpf.CollectionSpec, made map[string]*ebpf.Map, cache *btf.Cache) (*ebpf.Collection, error) {
	mapsOnly := spec.Copy()
	mapsOnly.Programs = map[string]*ebpf.ProgramSpec{}
	coll, err := ebpf.NewCollectionWithOptions(mapsOnly, ebpf.CollectionOptions{MapReplacements: made, Cache: cache})
	if err != nil {
		return nil, err
	}
	coll.Programs = map[string]*ebpf.Program{}

	halves := balance(spec)
	var (
		wg    sync.WaitGroup
		parts [2]*ebpf.Collection
		errs  [2]error
	)
	for i, half := range halves {
		if len(half) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := spec.Copy()
			for name := range s.Programs {
				if !slices.Contains(half, name) {
					delete(s.Programs, name)
				}
			}
			parts[i], errs[i] = ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: coll.Maps, Cache: cache})
		}()
	}
	wg.Wait()
	for i, p := range parts {
		if p == nil {
			continue
		}
		if errs[0] == nil && errs[1] == nil {
			for _, name := range halves[i] {
				coll.Programs[name] = p.DetachProgram(name)
			}
		}
		p.Close() // its clones of the maps, and its programs on failure
	}
	if err := errors.Join(errs[0], errs[1]); err != nil {
		coll.Close()
		// The first verifier error as itself, so callers can inspect it.
		for _, e := range errs {
			if e != nil {
				return nil, e
			}
		}
		return nil, err
	}
	return coll, nil
}

// balance splits the programs in two halves of about the same size,
// largest first, each to the lighter half.
func balance(spec *ebpf.CollectionSpec) [2][]string {
	var names []string
	for name := range spec.Programs {
		names = append(names, name)
	}
	size := func(n string) int { return len(spec.Programs[n].Instructions) }
	sort.Slice(names, func(i, j int) bool { return size(names[i]) > size(names[j]) })
	var halves [2][]string
	var load [2]int
	for _, n := range names {
		i := 0
		if load[1] < load[0] {
			i = 1
		}
		halves[i] = append(halves[i], n)
		load[i] += size(n)
	}
	return halves
}

// loadError makes a verifier rejection readable: its last lines say why.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		log := ve.Log
		if len(log) > 12 {
			log = log[len(log)-12:]
		}
		return fmt.Errorf("the kernel's verifier rejected a program: %s\n%s", ve.Cause, strings.Join(log, "\n"))
	}
	return fmt.Errorf("loading BPF programs: %w", err)
}

// attachAll attaches every chosen hook's programs.
func (t *Tracer) attachAll(spec *ebpf.CollectionSpec) error {
	for i := range t.hooks {
		if err := t.attach(&t.hooks[i], spec); err != nil {
			return err
		}
	}
	t.info.Hooks = reports(t.hooks)
	return nil
}

func (t *Tracer) attach(h *hook, spec *ebpf.CollectionSpec) error {
	for _, name := range h.programs {
		prog, section := t.coll.Programs[name], spec.Programs[name].SectionName
		if prog.Type() == ebpf.RawTracepoint { // the sampler: run on demand, not attached
			t.sampler = prog
			continue
		}
		var (
			l   link.Link
			err error
		)
		if tp, ok := strings.CutPrefix(section, "tracepoint/"); ok {
			group, event, _ := strings.Cut(tp, "/")
			l, err = link.Tracepoint(group, event, prog, nil)
		} else {
			l, err = link.AttachTracing(link.TracingOptions{Program: prog})
		}
		if err != nil {
			if h.optional {
				h.Notes = append(h.Notes, fmt.Sprintf("%s: not attached: %s", section, shortReason(err)))
				continue
			}
			return fmt.Errorf("attaching %s (%s): %w", section, h.Event, err)
		}
		t.links = append(t.links, l)
		t.progs = append(t.progs, attached{prog, h.Event, section})
	}
	return nil
}

// runIterator runs an iterator program once, for its side effects.
func runIterator(prog *ebpf.Program) error {
	l, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		return err
	}
	defer l.Close()
	it, err := l.Open()
	if err != nil {
		return err
	}
	defer it.Close()
	_, err = io.Copy(io.Discard, it)
	return err
}
