package migration

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	files, err := Load(fstest.MapFS{
		"0002_more.sql":  {Data: []byte("CREATE TABLE b (x INT);")},
		"0001_init.sql":  {Data: []byte("CREATE TABLE a (x INT);")},
		"0003_third.sql": {Data: []byte("")},
		"README.md":      {Data: []byte("not a migration")},
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []File{
		{1, "0001_init.sql", "CREATE TABLE a (x INT);"},
		{2, "0002_more.sql", "CREATE TABLE b (x INT);"},
		{3, "0003_third.sql", ""},
	}
	if len(files) != len(want) {
		t.Fatalf("Load: %d files, want %d", len(files), len(want))
	}
	for i := range want {
		if files[i] != want[i] {
			t.Errorf("file %d: %+v, want %+v", i, files[i], want[i])
		}
	}
	if files, err := Load(fstest.MapFS{}); err != nil || len(files) != 0 {
		t.Fatalf("Load of an empty directory: %v, %v; want no files", files, err)
	}
}

func TestLoadRefuses(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files fstest.MapFS
		want  string
	}{
		{"gap", fstest.MapFS{"0001_a.sql": {}, "0003_c.sql": {}}, "version 3, want 2"},
		{"duplicate", fstest.MapFS{"0001_a.sql": {}, "01_b.sql": {}}, "version 1, want 2"},
		{"bad name", fstest.MapFS{"init.sql": {}}, "not NNNN_name.sql"},
		{"not a number", fstest.MapFS{"first_a.sql": {}}, "not NNNN_name.sql"},
		{"zero", fstest.MapFS{"0000_a.sql": {}}, "not NNNN_name.sql"},
		{"negative", fstest.MapFS{"-1_a.sql": {}}, "not NNNN_name.sql"},
		{"not from 1", fstest.MapFS{"0002_b.sql": {}}, "version 2, want 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			files, err := Load(tt.files)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load(%v) = %v, %v; want an error with %q", tt.files, files, err, tt.want)
			}
		})
	}
}
