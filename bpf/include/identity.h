/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Security identity numbers the datapath reasons about (STABLE: they ride in
 * the VXLAN VNI). Mirrors glia.model.identity (ReservedIdentity and the
 * cluster layout); a test compares the two.
 *
 * 0..255 are reserved and the same in every cluster; a cluster's allocated
 * identities are cluster_id << 16 | n with n in 256..65535, cluster_id 1..255.
 */
#ifndef GLIA_IDENTITY_H
#define GLIA_IDENTITY_H

#define GLIA_ID_HOST 1           /* this node (its IPs in its own ipcache) */
#define GLIA_ID_WORLD 2          /* outside the mesh: no ipcache entry */
#define GLIA_ID_INIT 5           /* an endpoint whose labels are not known yet */
#define GLIA_ID_REMOTE_NODE 6    /* another node of the mesh (its node IP) */
#define GLIA_ID_MIN_LOCAL 256    /* first allocated index within a cluster */
#define GLIA_ID_CLUSTER_SHIFT 16 /* identity >> this = the cluster that minted it */
#define GLIA_ID_LOCAL_MASK 0xFFFF

#endif /* GLIA_IDENTITY_H */
