module swarmvlan

go 1.26
