package routing

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/eventwire"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// Normalize validates one published event and, when it is valid, fills its defaults in place:
// event_id (a new UUIDv7), timestamp (now; a given timestamp is rewritten to UTC with milliseconds),
// routing.topic (DefaultTopic of the data type) and routing.routing_key (DefaultRoutingKey).
//
// Every problem of the event is reported, not just the first, as an apierr.FieldErrors whose field paths
// start with field (e.g. field "events[3]" gives "events[3].routing.topic"; "" gives "routing.topic").
// An invalid event is left unchanged, except that an event over MaxEventBytes is only detected after its
// defaults were filled. Any other error (the random source failing) is wrapped, not a FieldErrors.
// Normalize is safe for concurrent use on distinct events.
//
// Every string of the event must be valid UTF-8, as protobuf requires: Normalize checks them itself, so
// an event decoded by UnmarshalVT or eventwire (which do not check) is held to the same rule as one
// proto.Unmarshal decoded. Details that eventwire left encoded are checked encoded.
func Normalize(ev *pdsv1.PortfolioDistribution, field string, now time.Time) error {
	if ev == nil {
		return apierr.FieldErrors{apierr.Errorf(field, "an event is required; send a PortfolioDistribution")}
	}
	// Field paths are built only for problems found, so a valid event costs no path strings.
	p := problems{prefix: field}

	if id := ev.GetEventId(); id != "" {
		p.add("event_id", checkToken(id, MaxEventIDLength, eventIDChars,
			"letters, digits, '-', '_', '.' and ':'", "leave it empty to get a UUIDv7"))
	}

	var timestamp string
	if ts := ev.GetTimestamp(); isCanonicalTimestamp(ts) {
		// Already in the one form PDS emits, as producers that reuse PDS timestamps send it.
		timestamp = ts
	} else if ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err == nil {
			// An offset can carry year 9999 into 10000, which RFC 3339 cannot write.
			if y := t.UTC().Year(); y < 1 || y > 9999 {
				err = fmt.Errorf("year %d in UTC", y)
			}
		}
		if err != nil {
			p.add("timestamp", fmt.Sprintf(
				"must be an RFC 3339 date-time such as \"2025-06-21T10:00:00.000Z\" (got %q); leave it empty to use the publish time",
				truncateForMessage(ts)))
		} else {
			timestamp = FormatTimestamp(t)
		}
	} else {
		timestamp = FormatTimestamp(now)
	}

	dataType := ev.GetDataType()
	if !knownDataType(dataType) {
		p.add("data_type", fmt.Sprintf(
			"is required and must be one of PORTFOLIO_STATE, PERFORMANCE_ATTRIBUTION, REBALANCING, RISK_BUDGET, CASH_MANAGEMENT (got %s)",
			dataType))
		dataType = pdsv1.PortfolioDataType_PORTFOLIO_DATA_TYPE_UNSPECIFIED
	}

	checkData(&p, ev.GetData(), dataType)

	r := ev.GetRouting()
	if topic := r.GetTopic(); topic != "" {
		p.add("routing.topic", checkTopic(topic))
	}
	if key := r.GetRoutingKey(); key != "" {
		p.add("routing.routing_key", checkRoutingKey(key))
	}
	checkTargetWorkflows(&p, r.GetTargetWorkflows())
	if prio := r.GetPriority(); prio < MinPriority || prio > MaxPriority {
		p.add("routing.priority", fmt.Sprintf("must be from %d (lowest) to %d (highest) (got %d)", MinPriority, MaxPriority, prio))
	}

	if len(p.errs) > 0 {
		return p.errs
	}

	if ev.EventId == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return errNewEventID(err)
		}
		ev.EventId = id.String()
	}
	ev.Timestamp = timestamp
	if ev.Routing == nil {
		ev.Routing = &pdsv1.RoutingInfo{}
	}
	if ev.Routing.Topic == "" {
		ev.Routing.Topic = DefaultTopic(dataType)
	}
	if ev.Routing.RoutingKey == "" {
		// At most MaxPortfolioIDLength+19 characters, well within MaxRoutingKeyLength.
		ev.Routing.RoutingKey = DefaultRoutingKey(ev.Data.PortfolioId, dataType)
	}
	if size := ev.SizeVT(); size > MaxEventBytes {
		return apierr.FieldErrors{apierr.Errorf(field,
			"the encoded event is at most %d bytes (1 MiB) (got %d); split the details into several events",
			MaxEventBytes, size)}
	}
	return nil
}

// CheckTopicName validates a topic name (an event's routing.topic or a topic's topic_name): 1 to
// MaxTopicLength characters from letters, digits, '/', '.', '_' and '-'. It returns nil when valid.
func CheckTopicName(field, topic string) *apierr.FieldError {
	if topic == "" {
		return apierr.Errorf(field, "is required; use a name such as \"portfolio/state/updated\"")
	}
	return fieldError(field, checkTopic(topic))
}

// CheckPortfolioID validates a portfolio id (data.portfolio_id, a filter's portfolio_ids entry, a REST
// path): 1 to MaxPortfolioIDLength characters from letters, digits, '-', '_' and '.'. It returns nil when valid.
func CheckPortfolioID(field, id string) *apierr.FieldError {
	return fieldError(field, checkPortfolioID(id))
}

// problems collects field errors under a common path prefix.
type problems struct {
	prefix string
	errs   apierr.FieldErrors
}

// add records description for the field at name, unless description is "" (no problem).
func (p *problems) add(name, description string) {
	if description != "" {
		p.errs = append(p.errs, &apierr.FieldError{Field: apierr.JoinField(p.prefix, name), Description: description})
	}
}

func fieldError(field, description string) *apierr.FieldError {
	if description == "" {
		return nil
	}
	return &apierr.FieldError{Field: field, Description: description}
}

func knownDataType(t pdsv1.PortfolioDataType) bool {
	return t >= pdsv1.PortfolioDataType_PORTFOLIO_STATE && t <= pdsv1.PortfolioDataType_CASH_MANAGEMENT
}

// detailsField maps each data type to the one PortfolioData.details member it may carry.
var detailsField = map[pdsv1.PortfolioDataType]string{
	pdsv1.PortfolioDataType_PORTFOLIO_STATE:         "portfolio_state",
	pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION: "performance_attribution",
	pdsv1.PortfolioDataType_REBALANCING:             "rebalancing",
	pdsv1.PortfolioDataType_RISK_BUDGET:             "risk_budget",
	pdsv1.PortfolioDataType_CASH_MANAGEMENT:         "cash_management",
}

func checkData(p *problems, data *pdsv1.PortfolioData, dataType pdsv1.PortfolioDataType) {
	if data == nil {
		p.add("data", "is required; send at least data.portfolio_id")
		return
	}
	p.add("data.portfolio_id", checkPortfolioID(data.GetPortfolioId()))
	p.add("data.total_value", checkFinite(data.GetTotalValue()))
	if pm := data.GetPerformanceMetrics(); pm != nil {
		p.add("data.performance_metrics.daily_return", checkFinite(pm.GetDailyReturn()))
		p.add("data.performance_metrics.ytd_return", checkFinite(pm.GetYtdReturn()))
	}
	member, details := detailsOf(data)
	encodedMember, encoded := eventwire.Details(data)
	if encodedMember != nil {
		member = string(encodedMember.Name())
	}
	if member == "" {
		return
	}
	if want := detailsField[dataType]; want != member && dataType != pdsv1.PortfolioDataType_PORTFOLIO_DATA_TYPE_UNSPECIFIED {
		p.add("data."+member, fmt.Sprintf(
			"does not match data_type %s; send data.%s details, or set data_type to the type of these details", dataType, want))
	}
	if encodedMember != nil {
		checkEncodedDetails(p, member, encodedMember, encoded)
		return
	}
	if details != nil && !detailsValid(data) {
		// Rare: walk the details by reflection to name every bad field.
		p.errs = appendInvalidValues(p.errs, apierr.JoinField(p.prefix, "data."+member), details.ProtoReflect())
	}
}

// checkEncodedDetails checks details that eventwire left encoded. Only when they are not valid are they
// decoded, to name every bad field as for decoded details.
func checkEncodedDetails(p *problems, member string, fd protoreflect.FieldDescriptor, encoded []byte) {
	valid, err := eventwire.CheckDetails(fd, encoded)
	if valid && err == nil {
		return
	}
	// The encoded field is a PortfolioData holding just these details.
	decoded := &pdsv1.PortfolioData{}
	if err == nil {
		err = decoded.UnmarshalVT(encoded)
	}
	if err != nil {
		p.add("data."+member, fmt.Sprintf("is not a valid %s encoding (%v); encode it with a protobuf library", fd.Message().Name(), err))
		return
	}
	_, details := detailsOf(decoded)
	p.errs = appendInvalidValues(p.errs, apierr.JoinField(p.prefix, "data."+member), details.ProtoReflect())
}

// detailsOf returns the proto name and value of the details member set on data, or "" when none is.
func detailsOf(data *pdsv1.PortfolioData) (string, proto.Message) {
	switch d := data.GetDetails().(type) {
	case *pdsv1.PortfolioData_PortfolioState:
		return "portfolio_state", d.PortfolioState
	case *pdsv1.PortfolioData_PerformanceAttribution:
		return "performance_attribution", d.PerformanceAttribution
	case *pdsv1.PortfolioData_Rebalancing:
		return "rebalancing", d.Rebalancing
	case *pdsv1.PortfolioData_RiskBudget:
		return "risk_budget", d.RiskBudget
	case *pdsv1.PortfolioData_CashManagement:
		return "cash_management", d.CashManagement
	default:
		return "", nil
	}
}

// detailsValid reports whether every double in data's details is finite and every string valid UTF-8,
// without allocating. Tests set each double and each string field of every details message by reflection
// to keep these lists complete.
func detailsValid(data *pdsv1.PortfolioData) bool {
	switch d := data.GetDetails().(type) {
	case *pdsv1.PortfolioData_PortfolioState:
		s := d.PortfolioState
		if !finite(s.GetCashBalance()) || !utf8.ValidString(s.GetCurrency()) {
			return false
		}
		for _, pos := range s.GetPositions() {
			if !finite(pos.GetQuantity(), pos.GetMarketValue(), pos.GetWeight()) || !utf8.ValidString(pos.GetInstrumentId()) {
				return false
			}
		}
	case *pdsv1.PortfolioData_PerformanceAttribution:
		a := d.PerformanceAttribution
		if !finite(a.GetActiveReturn()) || !validUTF8(a.GetBenchmarkId(), a.GetPeriodStart(), a.GetPeriodEnd()) {
			return false
		}
		for _, e := range a.GetEffects() {
			if !finite(e.GetAllocationEffect(), e.GetSelectionEffect(), e.GetInteractionEffect()) || !utf8.ValidString(e.GetSegment()) {
				return false
			}
		}
	case *pdsv1.PortfolioData_Rebalancing:
		r := d.Rebalancing
		if !validUTF8(r.GetRebalanceId(), r.GetReason(), r.GetStatus()) {
			return false
		}
		for _, tr := range r.GetTrades() {
			if !finite(tr.GetQuantity(), tr.GetTargetWeight()) || !validUTF8(tr.GetInstrumentId(), tr.GetSide()) {
				return false
			}
		}
	case *pdsv1.PortfolioData_RiskBudget:
		rb := d.RiskBudget
		if !finite(rb.GetTotalRiskBudget(), rb.GetUtilized(), rb.GetValueAtRisk_95()) {
			return false
		}
		for _, a := range rb.GetAllocations() {
			if !finite(a.GetBudget(), a.GetUtilization()) || !utf8.ValidString(a.GetFactor()) {
				return false
			}
		}
	case *pdsv1.PortfolioData_CashManagement:
		c := d.CashManagement
		if !finite(c.GetAvailableCash(), c.GetPendingSettlements()) || !utf8.ValidString(c.GetCurrency()) {
			return false
		}
		for _, f := range c.GetFlows() {
			if !finite(f.GetAmount()) || !validUTF8(f.GetDate(), f.GetDescription()) {
				return false
			}
		}
	}
	return true
}

func validUTF8(values ...string) bool {
	for _, v := range values {
		if !utf8.ValidString(v) {
			return false
		}
	}
	return true
}

func finite(values ...float64) bool {
	for _, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

func checkFinite(v float64) string {
	if !finite(v) {
		return fmt.Sprintf("must be a finite number (got %v)", v)
	}
	return ""
}

// appendInvalidValues names every NaN or infinite double and every string that is not valid UTF-8
// inside m, at any depth.
func appendInvalidValues(errs apierr.FieldErrors, field string, m protoreflect.Message) apierr.FieldErrors {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		at := apierr.JoinField(field, string(fd.Name()))
		if fd.IsMap() {
			return true
		}
		if fd.IsList() {
			list := v.List()
			for i := range list.Len() {
				errs = appendInvalidValue(errs, fmt.Sprintf("%s[%d]", at, i), fd, list.Get(i))
			}
			return true
		}
		errs = appendInvalidValue(errs, at, fd, v)
		return true
	})
	return errs
}

// appendInvalidValue checks one value (a singular field or a list element) of field fd.
func appendInvalidValue(errs apierr.FieldErrors, at string, fd protoreflect.FieldDescriptor, v protoreflect.Value) apierr.FieldErrors {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		return appendInvalidValues(errs, at, v.Message())
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		if problem := checkFinite(v.Float()); problem != "" {
			return append(errs, apierr.Errorf(at, "%s", problem))
		}
	case protoreflect.StringKind:
		if !utf8.ValidString(v.String()) {
			return append(errs, apierr.Errorf(at, "must be valid UTF-8 text (got %q)", truncateForMessage(v.String())))
		}
	}
	return errs
}

func checkTopic(topic string) string {
	return checkToken(topic, MaxTopicLength, topicChars, "letters, digits, '/', '.', '_' and '-'", "shorten the topic name")
}

func checkPortfolioID(id string) string {
	if id == "" {
		return fmt.Sprintf("is required, at most %d characters", MaxPortfolioIDLength)
	}
	return checkToken(id, MaxPortfolioIDLength, portfolioIDChars, "letters, digits, '-', '_' and '.'", "shorten the portfolio id")
}

func checkRoutingKey(key string) string {
	if len(key) <= MaxRoutingKeyLength && isPrintableASCII(key) {
		return ""
	}
	if n := utf8.RuneCountInString(key); n > MaxRoutingKeyLength {
		return fmt.Sprintf("at most %d characters (got %d); shorten the routing key", MaxRoutingKeyLength, n)
	}
	if !utf8.ValidString(key) {
		return "must be valid UTF-8"
	}
	for i, r := range key {
		if r == ' ' || !unicode.IsPrint(r) {
			return fmt.Sprintf("must be printable characters without spaces (got %q at byte %d)", r, i)
		}
	}
	return ""
}

func checkTargetWorkflows(p *problems, targets []string) {
	if len(targets) > MaxTargetWorkflows {
		p.add("routing.target_workflows", fmt.Sprintf(
			"at most %d workflows (got %d); leave the list empty to reach every subscribed workflow", MaxTargetWorkflows, len(targets)))
	}
	for i, w := range targets {
		if len(w) <= MaxWorkflowLength && isPrintableASCII(w) {
			continue
		}
		var problem string
		switch n := utf8.RuneCountInString(w); {
		case n == 0 || strings.TrimSpace(w) == "":
			problem = "must not be empty; remove the entry or name a workflow"
		case n > MaxWorkflowLength:
			problem = fmt.Sprintf("at most %d characters (got %d); shorten the workflow name", MaxWorkflowLength, n)
		case !utf8.ValidString(w):
			problem = "must be valid UTF-8 text"
		case strings.IndexFunc(w, unicode.IsControl) >= 0:
			problem = "must not contain control characters"
		}
		if problem != "" {
			p.add(fmt.Sprintf("routing.target_workflows[%d]", i), problem)
		}
	}
}

// checkToken checks length (in characters) and character set of an identifier-like value.
func checkToken(s string, maxLen int, allowed *tokenChars, allowedText, fix string) string {
	// No more bytes than allowed characters means no more characters either: counting them is left out.
	if len(s) > maxLen {
		if n := utf8.RuneCountInString(s); n > maxLen {
			return fmt.Sprintf("at most %d characters (got %d); %s", maxLen, n, fix)
		}
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || !allowed[c] {
			r, _ := utf8.DecodeRuneInString(s[i:])
			return fmt.Sprintf("may contain only %s (got %q at byte %d)", allowedText, r, i)
		}
	}
	return ""
}

// tokenChars is the set of characters a token may hold, all of them ASCII: a table lookup per byte
// instead of a predicate call per character, on every event's ids and topic.
type tokenChars [utf8.RuneSelf]bool

func charsOf(allowed func(rune) bool) *tokenChars {
	var t tokenChars
	for c := range rune(utf8.RuneSelf) {
		t[c] = allowed(c)
	}
	return &t
}

var (
	eventIDChars     = charsOf(isEventIDChar)
	portfolioIDChars = charsOf(isPortfolioIDChar)
	topicChars       = charsOf(isTopicChar)
)

// isPrintableASCII reports whether s is non-empty and only printable ASCII other than space: the common
// case of routing keys and workflow names, which then need no further checks.
func isPrintableASCII(s string) bool {
	for i := range len(s) {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return s != ""
}

func isAlnum(r rune) bool {
	return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
}

func isEventIDChar(r rune) bool {
	return isAlnum(r) || r == '-' || r == '_' || r == '.' || r == ':'
}

func isPortfolioIDChar(r rune) bool { return isAlnum(r) || r == '-' || r == '_' || r == '.' }

func isTopicChar(r rune) bool { return isAlnum(r) || r == '/' || r == '.' || r == '_' || r == '-' }

// truncateForMessage keeps echoed input short so an error message cannot grow with the input.
func truncateForMessage(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// isCanonicalTimestamp reports whether ts is a valid date-time written exactly in TimestampLayout
// ("2025-06-21T10:00:00.000Z", year 1 or later), which FormatTimestamp would write unchanged. It spares
// such timestamps a parse and a format.
func isCanonicalTimestamp(ts string) bool {
	if len(ts) != len(TimestampLayout) {
		return false
	}
	// A digit wherever the layout has one, and the layout's own separators between them.
	for i := range len(ts) {
		if c, want := ts[i], TimestampLayout[i]; want >= '0' && want <= '9' {
			if c < '0' || c > '9' {
				return false
			}
		} else if c != want {
			return false
		}
	}
	num := func(from, to int) int {
		n := 0
		for _, c := range ts[from:to] {
			n = n*10 + int(c-'0')
		}
		return n
	}
	year, month, day := num(0, 4), num(5, 7), num(8, 10)
	return year >= 1 && month >= 1 && month <= 12 && day >= 1 && day <= daysIn(month, year) &&
		num(11, 13) <= 23 && num(14, 16) <= 59 && num(17, 19) <= 59
}

// daysIn is the number of days of a month (1–12) of a year of the proleptic Gregorian calendar, which
// the time package uses.
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	default:
		return 31
	}
}
