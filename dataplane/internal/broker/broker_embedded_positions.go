package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// A subscription's only durable state is where it resumes: the stream sequence of the first frame with a
// record it has not acknowledged, or of the first frame it has not read (subscriptionCursor.resumeLocked).
// PDS keeps these positions in one file it syncs once per PositionInterval at most, plus whenever a
// subscription is created or seeks. A crash therefore delivers again what was acknowledged in the last
// interval (at least once), never less. Syncing state per acknowledgement instead (as JetStream's durable
// consumers with file storage do, up to ten times a second each) cost 1,000 synchronous writes a second
// with 100 subscriptions, competing with the records' own for the disk (BENCHMARKS.md).

// positionsFile is the file in EmbeddedOptions.Dir that holds the resume positions.
const positionsFile = "pds-subscription-positions.json"

// positionsVersion is the format of positionsFile this build writes and reads.
const positionsVersion = 1

// positionBook is the resume position of every subscription, by stream/consumer key.
type positionBook struct {
	path string
	// saveMu orders saves: each writes the book as it is when it starts, after the one before it.
	saveMu sync.Mutex

	mu      sync.Mutex
	resume  map[string]uint64
	changed bool // resume differs from the file
}

type positionsOnDisk struct {
	Version int               `json:"version"`
	Resume  map[string]uint64 `json:"resume"`
}

// loadPositions reads the book in dir; a missing file is an empty book.
func loadPositions(dir string) (*positionBook, error) {
	p := &positionBook{path: filepath.Join(dir, positionsFile), resume: map[string]uint64{}}
	data, err := os.ReadFile(p.path)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read subscription positions: %w", err)
	}
	var disk positionsOnDisk
	if err := json.Unmarshal(data, &disk); err != nil {
		return nil, fmt.Errorf("subscription positions in %s are unreadable (%v); remove the file to resume every subscription from its start time instead", p.path, err)
	}
	if disk.Version != positionsVersion {
		return nil, fmt.Errorf("subscription positions in %s have format %d, this build reads %d; run the PDS version that wrote them", p.path, disk.Version, positionsVersion)
	}
	if disk.Resume != nil {
		p.resume = disk.Resume
	}
	return p, nil
}

func (p *positionBook) get(key string) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seq, ok := p.resume[key]
	return seq, ok
}

func (p *positionBook) set(key string, seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.resume[key]; !ok || old != seq {
		p.resume[key] = seq
		p.changed = true
	}
}

// removeIf forgets the keys match accepts.
func (p *positionBook) removeIf(match func(key string) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key := range p.resume {
		if match(key) {
			delete(p.resume, key)
			p.changed = true
		}
	}
}

// save writes the book when it changed: to a temporary file, synced, then renamed over the old one and the
// directory synced, so a crash leaves either the old book or the new one.
func (p *positionBook) save() error {
	p.saveMu.Lock()
	defer p.saveMu.Unlock()
	p.mu.Lock()
	if !p.changed {
		p.mu.Unlock()
		return nil
	}
	data, err := json.Marshal(positionsOnDisk{Version: positionsVersion, Resume: maps.Clone(p.resume)})
	p.changed = false
	p.mu.Unlock()
	if err == nil {
		err = writeFileSynced(p.path, data)
	}
	if err != nil {
		p.mu.Lock()
		p.changed = true
		p.mu.Unlock()
		return fmt.Errorf("save subscription positions: %w", err)
	}
	return nil
}

func writeFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// runPositions saves the subscriptions' positions every interval, until stop is closed.
func (b *EmbeddedBroker) runPositions(interval time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-ticker.C:
			if err := b.checkpointPositions(); err != nil {
				b.log.Warn("embedded broker: subscription positions not saved; a crash now would deliver more again", "err", err)
			}
			b.trimFeeds(now)
		}
	}
}

// checkpointPositions notes where every subscription of this process resumes and saves the book if any
// moved. A position is noted under its cursor's lock, as a Seek notes its own, so the later of the two wins.
func (b *EmbeddedBroker) checkpointPositions() error {
	b.mu.Lock()
	cursors := slices.Collect(maps.Values(b.cursors))
	b.mu.Unlock()
	for _, cur := range cursors {
		cur.mu.Lock()
		// A deleted subscription's position is forgotten after it is marked gone: noting it would bring it back.
		if !cur.gone {
			b.positions.set(cur.key, cur.resumeLocked())
		}
		cur.mu.Unlock()
	}
	return b.positions.save()
}

// trimFeeds drops the frames idle topics' feeds still hold.
func (b *EmbeddedBroker) trimFeeds(now time.Time) {
	b.mu.Lock()
	feeds := slices.Collect(maps.Values(b.feeds))
	b.mu.Unlock()
	for _, f := range feeds {
		f.trim(now)
	}
}
