// Package bench holds Perch's system benchmarks: they drive a real edge over loopback TCP
// with the same client as a baseline server, in the same run, so that a result reads as a
// ratio to what this machine can do at all (these machines are shared and noisy; absolute
// figures are not comparable from one run to the next).
//
//	go test -run '^$' -bench . -benchmem ./bench
//
// The load generator behind `perch bench` is the sub-package bench/load (see README.md).
package bench
