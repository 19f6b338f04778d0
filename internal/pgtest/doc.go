// Package pgtest gives tests a PostgreSQL (or CockroachDB) database of their own.
//
// DSN creates a fresh, empty database per call (CREATE DATABASE perch_<random>) on the server
// that the environment variable PERCH_TEST_POSTGRES names, and drops it when the test ends,
// closing any connection left to it. The database is empty: a test that wants the Perch schema
// opens core/pgstore on it (which migrates), and a migration test sees the database as a
// first start would. Tests on separate databases do not see each other, so they may run in
// parallel.
//
// Without PERCH_TEST_POSTGRES a test that asks for a database is skipped, so that `go test
// ./...` stays hermetic; under CI=true it fails instead ("CI must run the PostgreSQL suite"),
// so that a CI job that lost its database cannot pass by skipping. `.ci/postgres start` starts
// a throwaway server and prints its DSN.
package pgtest
