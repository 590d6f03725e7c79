module taskfleet.local/pause

go 1.24
