# irq_in_user_fixed: irq_in_user, but the owner waits for the timer's
# complete() before it returns to user space (then spins the same way).
. /bench/scenarios/irq_in_user.sh
trigger() {
	iu_run irq_in_user_fixed
}
