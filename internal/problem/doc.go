// Package problem is Perch's error vocabulary on the wire: RFC 9457 problem details with a
// stable machine-readable code. Edges answer every failed request with one, and the core sends
// them back inside write outcomes and read replies, so a client sees the same problem whichever
// part of the system decided it.
package problem
