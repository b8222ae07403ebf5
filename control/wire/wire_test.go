package wire

import "testing"

func TestValidatePoPID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"par", true},
		{"us-east-1", true},
		{"", false},
		{"PAR", false},
		{"par.1", false},
		{"-par", false},
		{"p_r", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if got := ValidatePoPID(tt.id) == nil; got != tt.want {
				t.Errorf("ValidatePoPID(%q) ok = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestDrainKey(t *testing.T) {
	if got, want := DrainKey("par"), "drain.par"; got != want {
		t.Errorf("DrainKey(par) = %q, want %q", got, want)
	}
}
