# double_complete_lost_events (issue 8, case 4): the double_complete race
# traced with a small ring buffer, and a burst of events (racebench's
# complete() calls) between the two completions: events are lost between
# the two sides of the race.
TRACE_FLAGS="--buffer-size 8K"
trigger() {
	rb_run double_complete_lost_events
}
