// Package cluster serves ClusterService: data-plane nodes join the replicated configuration as raft
// non-voters, leave it again, and report what their broker driver did with each topic.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/configfsm"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/raftnode"
)

// Input limits.
const (
	MaxNodeIDLength      = 100
	MaxRaftAddressLength = 255
	// membershipTimeout bounds one raft membership change when the request has no earlier deadline.
	membershipTimeout = 10 * time.Second
)

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Deps are the service's collaborators; none may be nil.
type Deps struct {
	// Node is the control plane's raft voter; membership changes succeed only while it leads.
	Node *raftnode.Node
	// Config returns the newest applied replicated config; its Version is what a joining node waits for.
	Config func() *configfsm.Config
	// TopicStatus keeps the nodes' topic reports (observations, outside raft).
	TopicStatus TopicStatusStore
	Logger      *slog.Logger
}

// TopicStatusStore keeps each data-plane node's latest report per topic. Safe for concurrent use.
type TopicStatusStore interface {
	// RecordTopicStatus stores node nodeID's reports, each replacing that node's previous report for the
	// topic, all or none. A report whose topic_id no longer names the tenant's topic of that name is
	// skipped. It returns how many reports were stored. Reports are already validated.
	RecordTopicStatus(ctx context.Context, nodeID string, reports []*pdsv1.TopicStatusReport) (stored int, err error)
	// ForgetNodeTopicStatus removes every report of node nodeID and returns how many there were.
	ForgetNodeTopicStatus(ctx context.Context, nodeID string) (removed int64, err error)
}

// Service implements pdsv1connect.ClusterServiceHandler.
type Service struct {
	node        *raftnode.Node
	config      func() *configfsm.Config
	topicStatus TopicStatusStore
	logger      *slog.Logger
}

var _ pdsv1connect.ClusterServiceHandler = (*Service)(nil)

// NewService returns the ClusterService handler.
func NewService(deps Deps) (*Service, error) {
	switch {
	case deps.Node == nil:
		return nil, errors.New("new cluster service: Deps.Node is nil")
	case deps.Config == nil:
		return nil, errors.New("new cluster service: Deps.Config is nil")
	case deps.TopicStatus == nil:
		return nil, errors.New("new cluster service: Deps.TopicStatus is nil")
	case deps.Logger == nil:
		return nil, errors.New("new cluster service: Deps.Logger is nil")
	}
	return &Service{
		node: deps.Node, config: deps.Config, topicStatus: deps.TopicStatus,
		logger: deps.Logger.With("component", "cluster"),
	}, nil
}

// JoinNode adds the node as a raft non-voter, or re-adds it when it rejoins under the same id (after a
// restart, possibly at a new address), and returns the config version the node must reach to be current.
func (s *Service) JoinNode(ctx context.Context, req *connect.Request[pdsv1.JoinNodeRequest]) (*connect.Response[pdsv1.JoinNodeResponse], error) {
	id, addr := req.Msg.GetNodeId(), req.Msg.GetRaftAddress()
	var errs apierr.FieldErrors
	errs = append(errs, validateNodeID(id)...)
	errs = append(errs, validateRaftAddress(addr)...)
	if len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	if err := s.node.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), timeout(ctx)); err != nil {
		return nil, s.membershipError("join", id, err)
	}
	version := s.config().Version
	s.logger.Info("data-plane node joined", "node_id", id, "raft_address", addr, "config_version", version)
	return connect.NewResponse(&pdsv1.JoinNodeResponse{ConfigVersion: version}), nil
}

// LeaveNode removes a non-voter. Leaving when not a member succeeds, so a node may retry freely.
func (s *Service) LeaveNode(ctx context.Context, req *connect.Request[pdsv1.LeaveNodeRequest]) (*connect.Response[pdsv1.LeaveNodeResponse], error) {
	id := req.Msg.GetNodeId()
	if errs := validateNodeID(id); len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	if err := s.node.RemoveNonvoter(raft.ServerID(id), timeout(ctx)); err != nil {
		return nil, s.membershipError("leave", id, err)
	}
	// A node that left no longer serves, so its topic reports must not keep a topic FAILED or PENDING. The
	// membership change is done; a failure here only leaves stale reports behind, so it is logged.
	removed, err := s.topicStatus.ForgetNodeTopicStatus(ctx, id)
	if err != nil {
		s.logger.Warn("could not forget the topic reports of a node that left", "node_id", id, "error", err)
	}
	s.logger.Info("data-plane node left", "node_id", id, "topic_reports_removed", removed)
	return connect.NewResponse(&pdsv1.LeaveNodeResponse{}), nil
}

func timeout(ctx context.Context) time.Duration {
	if deadline, ok := ctx.Deadline(); ok {
		return max(min(time.Until(deadline), membershipTimeout), time.Millisecond)
	}
	return membershipTimeout
}

func (s *Service) membershipError(verb, id string, err error) error {
	var notLeader *raftnode.NotLeaderError
	switch {
	case errors.As(err, &notLeader):
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s node %q: %w; send the request to the leader's control plane", verb, id, notLeader))
	case errors.Is(err, raftnode.ErrIsVoter):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"%s node %q: node_id or raft_address belongs to a control-plane voter; data-plane nodes need their own node_id and address", verb, id))
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown),
		errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s node %q: %w; retry", verb, id, err))
	default:
		s.logger.Error("raft membership change failed", "verb", verb, "node_id", id, "error", err)
		return connect.NewError(connect.CodeInternal, fmt.Errorf("%s node %q: %w", verb, id, err))
	}
}

func validateNodeID(id string) apierr.FieldErrors {
	switch {
	case id == "":
		return apierr.FieldErrors{apierr.Errorf("node_id", "required; use a stable name per node such as its host name")}
	case len(id) > MaxNodeIDLength:
		return apierr.FieldErrors{apierr.Errorf("node_id", "at most %d characters (got %d); shorten the node id", MaxNodeIDLength, len(id))}
	case !nodeIDPattern.MatchString(id):
		return apierr.FieldErrors{apierr.Errorf("node_id", "only letters, digits, '.', '_' and '-' are allowed (got %q)", id)}
	}
	return nil
}

func validateRaftAddress(addr string) apierr.FieldErrors {
	const field = "raft_address"
	if addr == "" {
		return apierr.FieldErrors{apierr.Errorf(field, "required; the host:port of the node's raft transport")}
	}
	if len(addr) > MaxRaftAddressLength {
		return apierr.FieldErrors{apierr.Errorf(field, "at most %d characters (got %d)", MaxRaftAddressLength, len(addr))}
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return apierr.FieldErrors{apierr.Errorf(field, "must be host:port (got %q): %v", addr, err)}
	}
	if host == "" {
		return apierr.FieldErrors{apierr.Errorf(field, "host is missing in %q; give an address the control plane can dial", addr)}
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return apierr.FieldErrors{apierr.Errorf(field, "%q is not dialable; advertise a concrete address instead of %s", addr, host)}
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return apierr.FieldErrors{apierr.Errorf(field, "port must be a number from 1 to 65535 (got %q)", portText)}
	}
	return nil
}
