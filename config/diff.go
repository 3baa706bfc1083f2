package config

import "reflect"

// Changed returns the names of the keys whose value differs between a and b, in the key table's order. Keys
// that set the same field (an ocserv synonym and ocgate's name) are reported once, by the later name.
func Changed(a, b *Config) []string {
	var out []string
	last := map[string]string{} // field → the last key setting it
	for i := range keyTable {
		if f := keyTable[i].field; f != "" && keyTable[i].status == applied {
			last[f] = keyTable[i].name
		}
	}
	for i := range keyTable {
		k := &keyTable[i]
		if k.field == "" || last[k.field] != k.name {
			continue
		}
		if !reflect.DeepEqual(k.fieldValue(a).Interface(), k.fieldValue(b).Interface()) {
			out = append(out, k.name)
		}
	}
	return out
}

// PerSession reports whether a key's value is taken into each session's configuration at login (UserConfig):
// a changed value applies to the next session without a restart.
func PerSession(name string) bool {
	k := keyByName[name]
	return k != nil && k.perUserApplied()
}
