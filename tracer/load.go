package tracer

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// premakeMaps creates every map but the data sections (.rodata holds the
// values learnt from the kernel's BTF): it can run while that is parsed.
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

	var names []string
	for name := range spec.Programs {
		names = append(names, name)
	}
	size := func(n string) int { return len(spec.Programs[n].Instructions) }
	sort.Slice(names, func(i, j int) bool { return size(names[i]) > size(names[j]) })
	var halves [2][]string
	var load [2]int
	for _, n := range names { // largest first, each to the lighter half
		i := 0
		if load[1] < load[0] {
			i = 1
		}
		halves[i] = append(halves[i], n)
		load[i] += size(n)
	}

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
