// SPDX-License-Identifier: GPL-2.0-only
/*
 * The 2017 KernUsr client's system calls, in its order, written from the
 * call list in issue 7 (not from its source, which we do not have): two
 * plain eventfds, poll on the first with a 10 s timeout, read the code,
 * on MMAP (2) open the seed's node and map one page MAP_PRIVATE read-write,
 * on MEMORY_READY (6) copy the page and write MEMORY_COPIED (7) to efd2,
 * on EXIT_TEST (5) leave, unmap, close. It prints the seed's userspace
 * lines. Used by the `seedclient` suite to prove the module still serves
 * this client unchanged (counter mode, kernels before 6.8).
 *
 * One extra line, for the suite only, after each ack:
 * "round <n> copied: pattern ok" or "... pattern BAD at byte <i>".
 */
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#define DEVICE "/dev/char/mmaptest"
#define PAGE 4096

int main(void)
{
	static unsigned char copy[PAGE];
	unsigned char *buf = NULL;
	unsigned long rounds = 0;
	int efd, efd2, dev = -1;
	int running = 1;

	setvbuf(stdout, NULL, _IOLBF, 0);
	efd = eventfd(0, 0);
	printf("Eventfd created efd=%d pid=%d\n", efd, getpid());
	efd2 = eventfd(0, 0);
	printf("Eventfd created efd2=%d pid=%d\n", efd2, getpid());
	printf("Start polling...\n");

	while (running) {
		struct pollfd pfd = { .fd = efd, .events = POLLIN };
		uint64_t value;
		int n = poll(&pfd, 1, 10000);

		if (n == 0) {
			printf("timeout in polling\n");
			continue;
		}
		if (n < 0 || !(pfd.revents & POLLIN))
			continue;
		if (read(efd, &value, sizeof(value)) != sizeof(value))
			continue;
		printf("In handling_polling value in eventfd = %llu\n",
		       (unsigned long long)value);
		switch (value) {
		case 2:
			printf("Got mmap command in polling eventfd\n");
			dev = open(DEVICE, O_RDWR);
			printf("Char dev %s opened \n", DEVICE);
			buf = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE, dev, 0);
			printf("Memory from char dev = %d mmaped to %p\n", dev,
			       (void *)buf);
			break;
		case 6: {
			uint64_t ack = 7;
			int i, bad = -1;

			/* The 2017 client does not check the mapping either. */
			memcpy(copy, buf, PAGE);
			if (write(efd2, &ack, sizeof(ack)) != sizeof(ack))
				perror("write efd2");
			for (i = 0; i < PAGE && bad < 0; i++)
				if (copy[i] != (unsigned char)(i % 255))
					bad = i;
			rounds++;
			if (bad < 0)
				printf("round %lu copied: pattern ok\n", rounds);
			else
				printf("round %lu copied: pattern BAD at byte %d\n",
				       rounds, bad);
			break;
		}
		case 5:
			printf("Stop polling cmd received\n");
			running = 0;
			break;
		default:
			break;
		}
		printf("handling_polling done!\n");
	}
	munmap(buf, PAGE);
	close(dev);
	printf("done!\n");
	return 0;
}
