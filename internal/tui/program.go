package tui

import (
	"slices"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
)

// Shared is the State the record stream feeds and the screen reads.
type Shared struct {
	mu sync.Mutex
	st *State
}

// NewShared wraps a State for the two goroutines.
func NewShared(st *State) *Shared { return &Shared{st: st} }

// Update runs f on the state under the lock.
func (s *Shared) Update(f func(*State)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.st)
}

func (s *Shared) frame(o Options) Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Frame(o)
}

// Ended tells the view that the source has no more records (a replay's
// end, an error): it stays on screen until the viewer quits.
type Ended struct{ Err error }

type tick struct{}

// Model is the bubbletea model of the view.
type Model struct {
	shared   *Shared
	interval time.Duration
	styles   Styles
	opts     Options
	frame    Frame
	width    int
	height   int
	replay   bool
	ended    *Ended
}

// NewModel makes the view over shared, redrawn every interval.
func NewModel(shared *Shared, interval time.Duration, r *lipgloss.Renderer, replay bool) *Model {
	m := &Model{shared: shared, interval: interval, styles: NewStyles(r), replay: replay,
		opts: Options{Group: Groupings[0], Sort: Sorts[0]}, width: 80, height: 24}
	m.frame = m.build()
	return m
}

// Err is the source's error, if it ended with one.
func (m *Model) Err() error {
	if m.ended == nil {
		return nil
	}
	return m.ended.Err
}

func (m *Model) build() Frame {
	f := m.shared.frame(m.opts)
	f.Replay = m.replay
	if m.ended != nil {
		f.Ended = true
		if m.ended.Err != nil {
			f.Stopped = m.ended.Err.Error()
		}
	}
	return f
}

func (m *Model) next() tea.Cmd {
	return tea.Tick(m.interval, func(time.Time) tea.Msg { return tick{} })
}

// Init starts the clock.
func (m *Model) Init() tea.Cmd { return m.next() }

// Update handles keys, size changes, the clock and the source's end.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tick:
		if !m.opts.Paused {
			m.frame = m.build()
		}
		return m, m.next()
	case Ended:
		m.ended = &msg
		m.frame = m.build()
	case tea.KeyMsg:
		return m, m.key(msg)
	}
	return m, nil
}

func (m *Model) key(k tea.KeyMsg) tea.Cmd {
	if e := m.opts.Editing; e != nil {
		switch k.Type {
		case tea.KeyEnter:
			m.opts.Filter, m.opts.Editing = *e, nil
		case tea.KeyEsc:
			m.opts.Filter, m.opts.Editing = "", nil
		case tea.KeyBackspace:
			if r := []rune(*e); len(r) > 0 {
				*e = string(r[:len(r)-1])
			}
		case tea.KeyCtrlC:
			return tea.Quit
		case tea.KeyRunes, tea.KeySpace:
			*e += string(k.Runes)
		}
		m.frame = m.build()
		return nil
	}
	switch k.String() {
	case "q", "ctrl+c", "esc":
		return tea.Quit
	case "g":
		m.opts.Group = cycle(Groupings, m.opts.Group)
	case "s":
		m.opts.Sort = cycle(Sorts, m.opts.Sort)
	case "p", " ":
		m.opts.Paused = !m.opts.Paused
	case "/":
		e := m.opts.Filter
		m.opts.Editing = &e
	case "?", "h":
		m.opts.Help = !m.opts.Help
	default:
		return nil
	}
	// Paused stops the clock's redraws only: a key redraws at once.
	m.frame = m.build()
	return nil
}

func cycle(list []string, cur string) string {
	return list[(slices.Index(list, cur)+1)%len(list)]
}

// View draws the current frame.
func (m *Model) View() string {
	f := m.frame
	f.Options.Editing = m.opts.Editing
	return Render(f, m.width, m.height, m.styles)
}
