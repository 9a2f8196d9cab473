//! Unit tests of the engine core: ordering, loss and batching. Rule
//! behaviour is tested by the replay fixtures in `detector/tests`.
