package tests

import "github.com/indexwire/indexwire/tests/pair"

func pairOpts() pair.Options { return pair.Options{Messages: 20} }
