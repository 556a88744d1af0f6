/* The end of a cell body (lstm_body.h, rnn_body.h, gru_body.h): it forgets the macros that
 * the instantiation in lstm.c / rnn.c / gru.c defined and the body itself used, so the
 * next instantiation can define them again. Included last by each body. */
#undef WMAT
#undef FN
#undef real
#undef SUFFIX
#undef EXP
#undef FR_REDUCED_OK
