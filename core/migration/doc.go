// Package migration holds the versioned, forward-only migration files of a store and the
// rules every store's migrator follows.
//
// A store embeds its migrations as a directory of NNNN_name.sql files, one schema change each,
// and reads them with Load. The rules:
//   - Versions are the numbers before the first "_" of the file names and run 1, 2, 3...
//     without gaps or duplicates, so that a missing or doubled file is an error at Load rather
//     than a change silently skipped or applied twice.
//   - Migrations are forward-only: a migrator applies the versions after the database's in
//     order, each once, and never undoes one (there are no down migrations). A version once
//     recorded is never applied again, so an edit to a released file reaches no database
//     that has it: a fix is a new version.
//   - Each migration runs in its own transaction together with the row that records its
//     version (schema_migrations), so that a crash or a failure leaves the schema at a
//     version boundary, and a migrator that finds a version recorded already skips it.
//
// How a store takes its turn (one writer connection, or a lock shared by many processes) and
// what it does with a database newer than its build are the store's own (see its migrate.go).
package migration
