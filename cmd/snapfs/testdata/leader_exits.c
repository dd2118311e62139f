/* A process whose thread-group leader exits while another thread runs on for a second: the
   leader is a zombie while the process still holds its files (TestAliveZombieLeader). */
#include <pthread.h>
#include <unistd.h>

static void *linger(void *arg) {
	(void)arg;
	sleep(1);
	return 0;
}

int main(void) {
	pthread_t t;
	if (pthread_create(&t, 0, linger, 0) != 0)
		return 1;
	pthread_exit(0);
}
