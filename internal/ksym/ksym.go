// Package ksym names kernel code addresses from /proc/kallsyms: the place
// a packet was freed (kfree_skb's location) as function+offset.
package ksym

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Table is the kernel's text symbols, by address.
type Table struct {
	addrs []uint64
	names []string
}

// ErrHidden is kallsyms without addresses: kptr_restrict hides them from
// this process.
var ErrHidden = errors.New("kallsyms shows no addresses (kernel.kptr_restrict)")

// Load reads a kallsyms file (/proc/kallsyms).
func Load(path string) (*Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}

// Read parses kallsyms lines ("ffffffff81000000 T _stext [module]"),
// keeping the code symbols.
func Read(r io.Reader) (*Table, error) {
	t := &Table{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	seen := false
	for sc.Scan() {
		line := sc.Text()
		addr, rest, ok := strings.Cut(line, " ")
		if !ok || len(rest) < 3 || rest[1] != ' ' {
			continue
		}
		if typ := rest[0]; typ != 't' && typ != 'T' {
			continue
		}
		a, err := strconv.ParseUint(addr, 16, 64)
		if err != nil {
			continue
		}
		seen = true
		if a == 0 {
			continue
		}
		name, _, _ := strings.Cut(rest[2:], "\t") // a module's symbols end in "\t[module]"
		t.addrs = append(t.addrs, a)
		t.names = append(t.names, name)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(t.addrs) == 0 {
		if seen {
			return nil, ErrHidden
		}
		return nil, errors.New("kallsyms lists no code symbols")
	}
	sort.Sort(byAddr{t})
	return t, nil
}

type byAddr struct{ t *Table }

func (b byAddr) Len() int           { return len(b.t.addrs) }
func (b byAddr) Less(i, j int) bool { return b.t.addrs[i] < b.t.addrs[j] }
func (b byAddr) Swap(i, j int) {
	b.t.addrs[i], b.t.addrs[j] = b.t.addrs[j], b.t.addrs[i]
	b.t.names[i], b.t.names[j] = b.t.names[j], b.t.names[i]
}

// Name is the address as function+0xoffset, "" when no symbol holds it.
func (t *Table) Name(addr uint64) string {
	i := sort.Search(len(t.addrs), func(i int) bool { return t.addrs[i] > addr }) - 1
	if i < 0 || addr == 0 {
		return ""
	}
	return t.names[i] + "+0x" + strconv.FormatUint(addr-t.addrs[i], 16)
}

// String says how many symbols the table holds.
func (t *Table) String() string { return fmt.Sprintf("%d kernel symbols", len(t.addrs)) }
