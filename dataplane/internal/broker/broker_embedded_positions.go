package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Subscription consumers keep their delivery state in the engine's memory (MemoryStorage). With file
// storage, and the fsync after every write that the records need, the engine rewrites and syncs each
// consumer's state file up to ten times a second whatever the rate: with 100 subscriptions that is 1,000
// synchronous writes a second competing with the records' own for the disk, which tripled fan-out's
// Publish latency (BENCHMARKS.md). Instead PDS notes where each consumer must resume, the stream sequence
// after its acknowledgement floor, in one file it syncs once per PositionInterval at most, and
// creates a consumer the engine lost in a restart at that sequence. A crash therefore delivers again what
// was acknowledged in the last interval (at least once), never less.

// positionsFile is the file in EmbeddedOptions.Dir that holds the resume positions.
const positionsFile = "pds-subscription-positions.json"

// positionsVersion is the format of positionsFile this build writes and reads.
const positionsVersion = 1

// positionBook is the resume position of every subscription consumer, by stream/consumer key, as last
// read from the engine, and which consumers acknowledged something since.
type positionBook struct {
	path string
	// saveMu orders saves: each writes the book as it is when it starts, after the one before it.
	saveMu sync.Mutex

	mu      sync.Mutex
	resume  map[string]uint64
	dirty   map[string]struct{}
	changed bool // resume differs from the file
}

type positionsOnDisk struct {
	Version int               `json:"version"`
	Resume  map[string]uint64 `json:"resume"`
}

// loadPositions reads the book in dir; a missing file is an empty book.
func loadPositions(dir string) (*positionBook, error) {
	p := &positionBook{path: filepath.Join(dir, positionsFile), resume: map[string]uint64{}, dirty: map[string]struct{}{}}
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
			delete(p.dirty, key)
			p.changed = true
		}
	}
}

// touch notes that the consumer's acknowledgement floor may have moved.
func (p *positionBook) touch(key string) {
	p.mu.Lock()
	p.dirty[key] = struct{}{}
	p.mu.Unlock()
}

func (p *positionBook) takeDirty() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.dirty))
	for key := range p.dirty {
		keys = append(keys, key)
	}
	clear(p.dirty)
	return keys
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

// recordPosition reads where the consumer of key resumes, notes it and saves the book. It runs where the
// position just changed by other means than acknowledgements (a consumer created, a seek), so a crash
// right after still resumes there.
func (b *EmbeddedBroker) recordPosition(ctx context.Context, key string) error {
	stream, durable, _ := strings.Cut(key, "/")
	cons, err := b.js.Consumer(ctx, stream, durable)
	if err != nil {
		return fmt.Errorf("read the position of consumer %s: %w", key, err)
	}
	info := cons.CachedInfo()
	if !info.Config.MemoryStorage {
		return nil
	}
	b.positions.set(key, info.AckFloor.Stream+1)
	return b.positions.save()
}

// runPositions saves the positions of the consumers that acknowledged something, every interval, until
// stop is closed.
func (b *EmbeddedBroker) runPositions(interval time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := b.checkpointPositions(ctx); err != nil {
				b.log.Warn("embedded broker: subscription positions not saved; a crash now would deliver more again", "err", err)
			}
			cancel()
		}
	}
}

// checkpointPositions reads the acknowledgement floor of every consumer touched since the last checkpoint
// and saves the book. The floors come from one in-process read of the engine's account: one API request per
// consumer cost 15–17 ms per checkpoint of 100 subscriptions (BenchmarkCheckpointPositions), 0.3–0.5 ms this
// way. Consumers a Seek or Subscribe is changing are left for the next checkpoint: they record their new
// position themselves, and a floor read before they finished would overwrite it; the others are held until
// their floors are noted.
func (b *EmbeddedBroker) checkpointPositions(ctx context.Context) error {
	keys := b.positions.takeDirty()
	if len(keys) == 0 {
		return nil
	}
	// Acknowledgements travel on subConn: a round trip on it first puts those sent so far at the engine
	// before the floors are read.
	if err := b.subConn.FlushWithContext(ctx); err != nil {
		for _, key := range keys {
			b.positions.touch(key)
		}
		return fmt.Errorf("flush acknowledgements: %w", err)
	}
	held := make(map[string]chan struct{}, len(keys))
	defer func() {
		for key, done := range held {
			b.endConsumerChange(key, done)
		}
	}()
	for _, key := range keys {
		if done, ok := b.tryBeginConsumerChange(key); ok {
			held[key] = done
		} else {
			b.positions.touch(key)
		}
	}
	floors, err := b.memoryConsumerFloors()
	if err != nil {
		for key := range held {
			b.positions.touch(key)
		}
		return err
	}
	for key := range held {
		// A consumer missing here was deleted (DeleteSubscription and DeleteTopic forget its position) or
		// keeps its state in files (an earlier version's, not moved yet).
		if floor, ok := floors[key]; ok {
			b.positions.set(key, floor+1)
		}
	}
	return b.positions.save()
}

// memoryConsumerFloors is the acknowledgement floor (a stream sequence) of every consumer that keeps its
// state in memory, by stream/consumer key.
func (b *EmbeddedBroker) memoryConsumerFloors() (map[string]uint64, error) {
	detail, err := b.server.JszAccount(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true, Consumer: true, Config: true})
	if err != nil {
		return nil, fmt.Errorf("read the consumers' acknowledgement floors: %w", err)
	}
	floors := map[string]uint64{}
	for _, stream := range detail.Streams {
		for _, c := range stream.Consumer {
			if c != nil && c.Config != nil && c.Config.MemoryStorage {
				floors[stream.Name+"/"+c.Name] = c.AckFloor.Stream
			}
		}
	}
	return floors, nil
}
