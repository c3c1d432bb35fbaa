package wal

import "testing"

func TestSnapshotSees(t *testing.T) {
	for _, tc := range []struct {
		snap string
		xids []uint32
		want bool
	}{
		{"100:105:", []uint32{99, 100, 104}, true},
		{"100:105:101,103", []uint32{99, 102, 104}, true},
		{"100:105:101,103", []uint32{103}, false},                      // still in progress
		{"12884903878:12884903888:12884903883", []uint32{1995}, false}, // epoch 3, in progress
		{"12884903878:12884903888:12884903883", []uint32{1996, 1990}, true},
		// xmax just past a wraparound: x is of the previous epoch.
		{"12884901768:12884901898:", []uint32{0xFFFFFFF0}, true},
		{"12884901768:12884901898:12884901872", []uint32{0xFFFFFFF0}, false},
		{"12884901768:12884901898:", nil, true},
		{"", []uint32{1}, false}, // no snapshot read
	} {
		var snap snapshot
		if tc.snap != "" {
			var err error
			if snap, err = parseSnapshot(tc.snap); err != nil {
				t.Fatal(err)
			}
		}
		if got := snap.sees(tc.xids); got != tc.want {
			t.Errorf("%q sees %v = %v, want %v", tc.snap, tc.xids, got, tc.want)
		}
	}
	for _, bad := range []string{"1:2", "a:2:", "1:2:x"} {
		if _, err := parseSnapshot(bad); err == nil {
			t.Errorf("parseSnapshot(%q) succeeded", bad)
		}
	}
}
