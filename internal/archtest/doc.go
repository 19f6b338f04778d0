// Package archtest holds the test that keeps Perch's layering as DESIGN §1 draws it: edge,
// core and gossip are peers with one-way imports, the wire protocol depends on nothing of
// Perch but problems, and test helpers stay out of production code.
package archtest
