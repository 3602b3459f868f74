package centrifugo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/pds-platform/pds/common/fastproto"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// maxBatchBody bounds one batch request: a larger Publish call is sent as several requests, one after
// the other, so order per channel holds and neither side buffers tens of megabytes.
const maxBatchBody = 4 << 20

// NewPublisher implements loadgen.System. Publishers share the system's HTTP connection pool.
func (s *System) NewPublisher(context.Context) (loadgen.Publisher, error) {
	p, err := s.currentPlan()
	if err != nil {
		return nil, err
	}
	return &publisher{system: s, plan: p}, nil
}

// publisher is safe for concurrent use: each Publish call builds its own batch.
type publisher struct {
	system *System
	plan   *plan
}

// batch is one batch request being built; batches are pooled because a run publishes millions of events.
type batch struct {
	body     bytes.Buffer
	channels []string
	// commands is how many commands body holds, for checking the reply.
	commands int
	// proto and b64 are scratch space for PayloadProtobuf.
	proto, b64 []byte
}

var batches = sync.Pool{New: func() any { return new(batch) }}

// Publish sends every event to the channels of the subscriptions it matches (events no subscription
// matches are not sent) and returns once Centrifugo answered OK for every one of them: it has handed them
// to its subscribers' queues, which is all it promises. A call larger than maxBatchBody takes several
// requests: when one fails, the events of the requests before it were published all the same.
func (p *publisher) Publish(ctx context.Context, events []loadgen.Event) error {
	b := batches.Get().(*batch)
	defer batches.Put(b)
	b.start()
	for i := range events {
		ev := &events[i]
		b.channels = p.plan.channelsFor(b.channels[:0], ev)
		if len(b.channels) == 0 {
			continue
		}
		if err := b.appendCommand(b.channels, ev.Message, p.system.opts.Payload); err != nil {
			return fmt.Errorf("centrifugo: encode event %d: %w", ev.Seq, err)
		}
		if b.body.Len() >= maxBatchBody {
			if err := p.system.sendBatch(ctx, b); err != nil {
				return err
			}
			b.start()
		}
	}
	if b.commands == 0 {
		return nil
	}
	return p.system.sendBatch(ctx, b)
}

func (p *publisher) Close() error { return nil }

func (b *batch) start() {
	b.body.Reset()
	b.body.WriteString(`{"commands":[`)
	b.commands = 0
}

// appendCommand adds a publish command (one channel) or a broadcast command (several: Centrifugo decodes
// the payload once for all of them). Channel names need no JSON escaping (see channelSafe).
func (b *batch) appendCommand(channels []string, msg *pdsv1.PortfolioDistribution, payload Payload) error {
	if b.commands > 0 {
		b.body.WriteByte(',')
	}
	b.commands++
	if len(channels) == 1 {
		b.body.WriteString(`{"publish":{"channel":"`)
		b.body.WriteString(channels[0])
		b.body.WriteString(`",`)
	} else {
		b.body.WriteString(`{"broadcast":{"channels":[`)
		for i, ch := range channels {
			if i > 0 {
				b.body.WriteByte(',')
			}
			b.body.WriteByte('"')
			b.body.WriteString(ch)
			b.body.WriteByte('"')
		}
		b.body.WriteString(`],`)
	}
	switch payload {
	case PayloadJSON:
		data, err := jsoncodec.Marshal(routing.ToDistributed(msg))
		if err != nil {
			return err
		}
		b.body.WriteString(`"data":`)
		b.body.Write(data)
	default:
		var err error
		if b.proto, err = fastproto.Append(b.proto[:0], msg); err != nil {
			return err
		}
		b.body.WriteString(`"b64data":"`)
		b.b64 = base64.StdEncoding.AppendEncode(b.b64[:0], b.proto)
		b.body.Write(b.b64)
		b.body.WriteByte('"')
	}
	b.body.WriteString(`}}`)
	return nil
}

// batchReply is the part of Centrifugo's batch response that tells whether every command succeeded.
type batchReply struct {
	Replies []struct {
		Error     *apiError `json:"error"`
		Broadcast *struct {
			Responses []struct {
				Error *apiError `json:"error"`
			} `json:"responses"`
		} `json:"broadcast"`
	} `json:"replies"`
}

type apiError struct {
	Code    uint32 `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return fmt.Sprintf("code %d: %s", e.Code, e.Message) }

// sendBatch posts b without "parallel", so Centrifugo runs its commands one after the other, in order.
func (s *System) sendBatch(ctx context.Context, b *batch) error {
	b.body.WriteString(`]}`)
	raw, err := s.post(ctx, "/batch", b.body.Bytes())
	if err != nil {
		return fmt.Errorf("centrifugo: publish %d commands: %w", b.commands, err)
	}
	var reply batchReply
	if err := json.Unmarshal(raw, &reply); err != nil {
		return fmt.Errorf("centrifugo: publish %d commands: decode the reply: %w", b.commands, err)
	}
	if len(reply.Replies) != b.commands {
		return fmt.Errorf("centrifugo: publish %d commands: the reply has %d results", b.commands, len(reply.Replies))
	}
	for i, r := range reply.Replies {
		if r.Error != nil {
			return fmt.Errorf("centrifugo: publish command %d of %d: %w", i, b.commands, r.Error)
		}
		if r.Broadcast == nil {
			continue
		}
		for _, resp := range r.Broadcast.Responses {
			if resp.Error != nil {
				return fmt.Errorf("centrifugo: broadcast command %d of %d: %w", i, b.commands, resp.Error)
			}
		}
	}
	return nil
}

// post sends body to the API method at path and returns the response body of a 200 answer.
func (s *System) post(ctx context.Context, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.opts.APIURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", s.opts.APIKey)
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("POST %s: read the reply: %w", req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: %s: %s", req.URL, resp.Status, truncate(raw, 200))
	}
	return raw, nil
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(bytes.TrimSpace(b))
	}
	return string(b[:n]) + "… (" + strconv.Itoa(len(b)) + " bytes)"
}
