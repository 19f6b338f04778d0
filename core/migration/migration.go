package migration

import (
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// File is one migration: the file NNNN_name.sql of a store's migrations directory.
type File struct {
	Version int    // NNNN: 1 for the first migration, and so on
	Name    string // the file's name in the directory, such as "0001_init.sql"
	SQL     string // the file's content: the statements of the migration
}

// Load reads the migrations of fsys (a directory of NNNN_name.sql files) in version order.
// It fails on a file whose name has no positive number before a "_", and unless the versions
// are 1, 2, 3... without gaps or duplicates.
func Load(fsys fs.FS) ([]File, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	files := make([]File, 0, len(names))
	for _, name := range names {
		num, _, ok := strings.Cut(path.Base(name), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name is not NNNN_name.sql", name)
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		files = append(files, File{Version: v, Name: name, SQL: string(body)})
	}
	slices.SortStableFunc(files, func(a, b File) int { return a.Version - b.Version })
	for i, f := range files {
		if f.Version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d (versions must run 1, 2, 3...)",
				f.Name, f.Version, i+1)
		}
	}
	return files, nil
}
