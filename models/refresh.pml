/*
 * The refresh protocol (SPEC 5, issue 11 item 0): one session with a generation counter,
 * refresh tokens that name a generation, several tabs sharing ONE cookie jar, any number of
 * server instances on one database, a clock, logout, and optionally a thief.
 * Checked by scripts/model-check.sh; ARCHITECTURE.md ("The refresh model") says what it
 * covers and what it abstracts away.
 *
 * Abstraction. The server only ever compares a presented generation with the session's:
 * equal, one behind, or more. So a token is stored as its distance behind the session's
 * current generation g: CUR, PREV (g-1), OLD (g-2 or older), or NONE. A rotation increments every token anyone holds (jar, requests, responses, thief),
 * saturating at OLD. Likewise the clock is the age of the last rotation in ticks, saturating
 * at GRACE+1 (only "age <= GRACE" matters). Both are exact for this protocol and make the
 * state space finite while runs stay infinite (so LTL liveness can be checked).
 *
 * Traces (spin -t) print tokens as numbers: 0 none, 1 current, 2 previous, 3 older.
 *
 * Compile-time switches (spin -DNAME=value):
 *   NT       tabs sharing the jar (default 2)
 *   LOSS     a response may be lost (the request's effect stays committed)
 *   PROMPT   the clock cannot leave the grace window while a request or response is in
 *            flight ("every round trip is shorter than GRACE")
 *   FIFO     the jar applies responses in the order their requests were sent
 *   CALM     a tab does not send a refresh while a refresh sent with an older token is still
 *            in flight (at most one rotation during any request's lifetime; NT <= 3)
 *   THIEF    a thief copies the jar's token once, at any moment, and replays it
 *   SPARSE   every lookup happens after the grace window of the last rotation
 *   UNPRESENTED  the variant: the previous token is accepted after the grace window too while
 *            the session's current token has never been presented (`successor_presented`)
 *   FORGIVE  the other variant: the previous token is accepted after the grace window unless
 *            the last such late acceptance was exactly one rotation ago (the pattern of two
 *            holders taking turns)
 *   LOGOUT   the browser may log out (revokes; the jar is cleared)
 *   CHAIN    include the LTL formula no_shared_chain (slow to translate)
 */

#ifndef NT
#define NT 2
#endif
#ifndef GRACE
#define GRACE 1
#endif
#define NONE 0                 /* no token (so globals start empty) */
#define CUR 1                  /* the session's current generation g */
#define PREV 2                 /* g-1 */
#define OLD 3                  /* g-2 or older */
#define THIEF_ID NT            /* request slot of the thief */
#define SLOTS (NT + 1)

/* outcomes of one lookup */
mtype = { O_REVOKED, O_REUSE, O_OK, O_CAS, O_NONE };

/* the database */
byte age = GRACE + 1;          /* ticks since rotated_at, saturating */
bool revoked;
byte reason;                   /* 0 live, 1 logout, 2 refresh_reused */
bool succ_presented;           /* UNPRESENTED's flag: token g has been presented */
byte forgiven;                 /* FORGIVE: when the last late previous token was accepted,
                                  as a distance like a token's (NONE: never) */

/* May the previous token be answered after the grace window? */
#if defined(UNPRESENTED)
#define LATE_OK (!succ_presented)
#elif defined(FORGIVE)
#define LATE_OK (forgiven != PREV)
#else
#define LATE_OK false
#endif

/* tokens held, as distances behind g */
byte jar = CUR;                /* the browser's cookie (login put the current token there) */
byte req[SLOTS];               /* token presented by the request in flight, NONE if idle */
byte resp[SLOTS];              /* token carried by the 200 in flight, NONE otherwise */
byte thief;                    /* the token the thief holds */
byte inflight;                 /* tabs with a request or response in flight */
byte older[NT];                /* FIFO: bit j set = tab j's outstanding request was sent before mine */

/* ground truth and observations */
bool thief_replayed;           /* the thief has presented a token */
bool false_alarm;              /* refresh_reused although nobody replayed anything */
bool fork;                     /* a token succeeded again more than GRACE after its first use */
bit tab_late;                  /* flips at each 200 to a tab's lookup made after grace */
bit thief_late;                /* flips at each 200 to the thief's lookup made after grace */
bool ok_after_revoke;          /* a 200 or a rotation decided on a revoked session */
byte lost;                     /* responses lost so far */

inline bump(x) { if :: x != NONE && x < OLD -> x++ :: else -> skip fi }

/* CAS won: g := g+1, rotated_at := now. Every token held anywhere falls one behind. */
inline rotate() {
  if :: revoked -> ok_after_revoke = true :: else -> skip fi;
  age = 0;
  succ_presented = false;
  bump(jar); bump(thief); bump(forgiven);
  for (k : 0 .. SLOTS - 1) { bump(req[k]); bump(resp[k]) }
}

/* The server's handling of the request in slot s: lookup (one snapshot read), then the
 * CAS or the revocation as separate atomic steps, so other requests interleave. */
inline serve(s) {
  do
  :: atomic {
#ifdef SPARSE
    age > GRACE ->
#endif
    if
    :: revoked -> outcome = O_REVOKED
    :: !revoked && req[s] == CUR ->
#ifdef UNPRESENTED
       succ_presented = true;
#endif
       outcome = O_CAS
    :: !revoked && req[s] == PREV && (age <= GRACE || LATE_OK) ->
       /* a racer: answer the session's current token, no state change */
       if :: age > GRACE -> fork = true; forgiven = CUR :: else -> skip fi;
       if :: revoked -> ok_after_revoke = true :: else -> skip fi;
       resp[s] = CUR; outcome = O_OK
    :: !revoked && (req[s] == OLD || (req[s] == PREV && age > GRACE && !LATE_OK)) ->
       outcome = O_REUSE
    fi;
    late = (age > GRACE);
    printf("MSC: slot %d lookup: token %d age %d -> %e\n", s, req[s], age, outcome);
    if :: s == THIEF_ID -> thief_replayed = true :: else -> skip fi
  }
  if
  :: outcome == O_CAS ->
     atomic {
       if
       :: req[s] == CUR && !revoked ->           /* UPDATE .. WHERE gen = g AND revoked_at IS NULL */
          rotate(); resp[s] = CUR; outcome = O_OK;
          printf("MSC: slot %d CAS won: rotated\n", s)
       :: else ->                              /* lost: someone rotated (or revoked) first */
          printf("MSC: slot %d CAS lost, looking again\n", s);
          assert(retries == 0);                /* a second loss is impossible */
          retries++
       fi
     }
  :: outcome == O_REUSE ->
     atomic {
       if :: !thief_replayed -> false_alarm = true :: else -> skip fi;
       revoked = true; reason = 2;
       printf("MSC: slot %d: session revoked, refresh_reused\n", s)
     }
  :: else -> skip
  fi;
  if :: outcome == O_CAS -> skip :: else -> break fi   /* a lost CAS looks again */
  od;
  if
  :: outcome == O_OK && late && s == THIEF_ID -> thief_late = 1 - thief_late
  :: outcome == O_OK && late && s != THIEF_ID -> tab_late = 1 - tab_late
  :: else -> skip
  fi
}

/* CALM: no refresh is sent while one sent with an older token is still in flight. */
#define CALM_OK ((req[0] == NONE || req[0] == jar) && (NT < 2 || req[1] == NONE || req[1] == jar) \
                 && (NT < 3 || req[2] == NONE || req[2] == jar))
#ifdef CALM
#define CAN_SEND (jar != NONE && CALM_OK)
#else
#define CAN_SEND (jar != NONE)
#endif

active [NT] proctype Tab() {
  mtype outcome; byte k, retries;
  bool late;
  byte me = _pid;
  assert(me < NT);
end_idle:
  atomic {
    CAN_SEND ->                                /* read the jar, send */
    req[me] = jar; resp[me] = NONE; outcome = O_NONE; retries = 0;
    printf("MSC: tab %d sends jar token %d\n", me, jar);
    inflight++;
#ifdef FIFO
    for (k : 0 .. NT - 1) {
      if :: k != me && req[k] != NONE -> older[me] = older[me] | (1 << k) :: else -> skip fi
    }
#endif
  };
  serve(me);
  atomic {
#ifdef FIFO
    older[me] == 0 ->
#endif
    if
    :: outcome == O_OK -> jar = resp[me];      /* Set-Cookie applied */
       printf("MSC: tab %d 200 lands, jar := %d\n", me, jar)
    :: outcome != O_OK -> jar = NONE;          /* every 401 clears the cookies */
       printf("MSC: tab %d 401 lands, jar cleared\n", me)
#ifdef LOSS
    :: lost < LOSS -> lost++;                  /* response lost, jar unchanged */
       printf("MSC: tab %d response lost\n", me)
#endif
    fi;
    req[me] = NONE; resp[me] = NONE; inflight--;
    outcome = O_NONE; late = 0; retries = 0; k = 0;
#ifdef FIFO
    for (k : 0 .. NT - 1) { older[k] = older[k] & ~(1 << me) }
#endif
  };
  goto end_idle
}

/* The clock: one tick at a time, nondeterministically. */
#ifdef PROMPT
#define CAN_TICK (age < GRACE || (age == GRACE && inflight == 0))
#else
#define CAN_TICK (age <= GRACE)
#endif
active proctype Clock() {
end:
  do
  :: atomic { CAN_TICK -> age++; printf("MSC: tick, age %d\n", age) }
  od
}

#ifdef LOGOUT
active proctype Logout() {
  atomic { !revoked -> revoked = true; reason = 1; jar = NONE; printf("MSC: logout\n") }
}
#endif

#ifdef THIEF
active proctype Thief() {
  mtype outcome; byte k, retries;
  bool late;
  byte s = THIEF_ID;
end_steal:
  atomic { jar != NONE -> thief = jar; printf("MSC: thief copies jar token %d\n", thief) };
end:
  do
  :: atomic { thief != NONE -> req[s] = thief; resp[s] = NONE; retries = 0 };
     serve(s);
     atomic {
       if :: outcome == O_OK -> thief = resp[s] :: else -> thief = NONE fi;
       req[s] = NONE; resp[s] = NONE;
       outcome = O_NONE; late = 0; retries = 0; k = 0
     }
  od
}
#endif

/* ---- properties ---- */

/* No false theft alarm: refresh_reused only after the thief replayed a token. */
ltl no_false_alarm { [] !false_alarm }
/* Reuse detection: a token that succeeded once never succeeds again more than GRACE after
 * its first use (its rotation), whichever server instance answers. */
ltl reuse_detected { [] !fork }
/* After a logout or a reuse detection nothing rotates and nothing is answered 200. */
ltl revoked_stays_dead { [] !ok_after_revoke }
/* The last two together (one search instead of two). */
ltl detection { [] (!fork && !ok_after_revoke) }
/* All three. */
ltl safety { [] (!false_alarm && !fork && !ok_after_revoke) }
/* A revocation is for good. */
ltl final { [] (revoked -> [] revoked) }
/* Theft evidence: the thief and the browser both keep refreshing after grace, forever,
 * and the session is never revoked (a violation of this formula is that run). */
#ifdef CHAIN
/* (Flips rather than one-state pulses: a pulse could stay up forever in a run where that
 * process stops, which would satisfy []<> without any event. Translating this formula
 * takes spin a few seconds, so it exists only with -DCHAIN.) */
ltl no_shared_chain { ! ([] !revoked && []<> thief_late && []<> !thief_late
                          && []<> tab_late && []<> !tab_late) }
#endif
