package routing

// The character predicates, for tests of the tables built from them.
var (
	IsEventIDChar     = isEventIDChar
	IsPortfolioIDChar = isPortfolioIDChar
	IsTopicChar       = isTopicChar
)
