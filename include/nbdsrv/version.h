/* SPDX-License-Identifier: MIT */
/*
 * The release of nbd-serverd and nbdc, as -V prints it.  The same
 * number is in debian/changelog and on the manual pages' .TH lines;
 * tests/deb/check-deb.sh compares them.
 */
#ifndef NBDSRV_VERSION_H
#define NBDSRV_VERSION_H

#define NBDSRV_VERSION "0.2.0"

#endif
